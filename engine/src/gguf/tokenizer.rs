//! A Hugging Face `tokenizer.json` from GGUF `tokenizer.ggml.*` metadata.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::Tokenizer;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

/// Builds the tokenizer of a GGUF file. Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`)
/// is supported; SentencePiece vocabularies (`"llama"`) are refused with the reason.
pub fn from_gguf(content: &Content) -> Result<Tokenizer, String> {
    let model = content
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .ok_or("no tokenizer.ggml.model in the metadata")?;
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model `{model}` is not supported; clreg builds byte-level BPE \
             (`gpt2`) tokenizers only: copy tokenizer.json from the original model"
        ));
    }
    let mut tokenizer = Tokenizer::from_gguf(content).map_err(|e| e.to_string())?;
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    if pre == Some("smollm") {
        // candle falls back to GPT-2's pre-tokenizer, which adds a leading space; SmolLM's
        // tokenizer.json splits digits and adds no prefix space.
        let seq = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(seq)));
    }
    Ok(tokenizer)
}

/// A token id stored under `key`, whatever integer type the writer chose.
pub fn token_id(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(int).map(|v| v as u32)
}

/// An integer metadata value of any width.
pub fn int(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(u64::from(*x)),
        Value::U16(x) => Some(u64::from(*x)),
        Value::U32(x) => Some(u64::from(*x)),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}
