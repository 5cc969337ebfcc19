//! Training data end to end: TRACE reading and its refusals, splits, tokenisation with
//! truncation, batches, replay/joint schedules, the byte tokenizer and the synthetic suite, each
//! checked against a plain computation written here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use clreg_engine::data::{
    Draw, EncodeOptions, Encoded, Example, Mixture, Schedule, ScheduleError, SplitError,
    Truncation, encode, encode_all, eos_id, pack_batches, pad_batch, parse_trace, read_trace,
    split,
};
use clreg_engine::error::FormatError;
use clreg_engine::synth::{Suite, SuiteSizes, write_suite};
use clreg_engine::tiny::{BYTE_VOCAB, TinyConfig, write_byte_tokenizer, write_tiny_tokenizer};
use tokenizers::Tokenizer;

fn assert_err<T: std::fmt::Debug>(r: Result<T, FormatError>, code: &str, needles: &[&str]) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "`{msg}` should contain `{n}`");
    }
}

fn ex(prompt: &str, answer: &str) -> Example {
    Example {
        prompt: prompt.to_string(),
        answer: answer.to_string(),
        choices: None,
        source: None,
    }
}

mod read {
    use super::*;

    #[test]
    fn array_and_lines_with_choices_and_source() {
        let a = br#"[{"prompt":"p","answer":" b","choices":[" a"," b"],"id":3},
                     {"prompt":"q","answer":"s","source":"complex s"},
                     {"prompt":"r","answer":"t","choices":null,"source":null}]"#;
        let got = parse_trace(a, "a.json").unwrap();
        assert_eq!(
            got,
            vec![
                Example {
                    prompt: "p".into(),
                    answer: " b".into(),
                    choices: Some(vec![" a".into(), " b".into()]),
                    source: None
                },
                Example {
                    prompt: "q".into(),
                    answer: "s".into(),
                    choices: None,
                    source: Some("complex s".into())
                },
                ex("r", "t"),
            ]
        );
        let l =
            "\u{feff}{\"prompt\":\"p\",\"answer\":\"a\"}\n\n{\"prompt\":\"q\",\"answer\":\"b\"}\n";
        assert_eq!(
            parse_trace(l.as_bytes(), "l.jsonl").unwrap(),
            vec![ex("p", "a"), ex("q", "b")]
        );
    }

    #[test]
    fn read_trace_reads_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let examples = vec![ex("a", "b"), ex("c", "d")];
        std::fs::write(&path, serde_json::to_vec(&examples).unwrap()).unwrap();
        assert_eq!(read_trace(&path).unwrap(), examples);
        assert_err(
            read_trace(&dir.path().join("none.json")),
            "io_error",
            &["none.json"],
        );
    }

    #[test]
    fn array_errors_name_example_and_line() {
        let cases: [(&str, &[&str]); 9] = [
            (
                "[\n{\"prompt\":\"p\",\"answer\":\"a\"},\n{\"answer\":\"a\"}\n]",
                &["example 1 (line 3)", "`prompt` is missing"],
            ),
            (
                "[\n{\"prompt\":\"p\",\"answer\":\"a\"},\n\n{\"prompt\":[],\"answer\":\"a\"}]",
                &["example 1 (line 4)", "`prompt` is an array, not a string"],
            ),
            (
                "[{\"prompt\":\"p\"}]",
                &["example 0 (line 1)", "`answer` is missing"],
            ),
            (
                "[{\"prompt\":\"p\",\"answer\":\"a\"},\n{\"prompt\":\"p\",\"answer\":null}]",
                &["example 1 (line 2)", "`answer` is null"],
            ),
            (
                "[{\"prompt\":\"p\",\"answer\":7}]",
                &["example 0", "`answer` is a number, not a string"],
            ),
            (
                "[{\"prompt\":\"p\",\"answer\":\"a\"},\n\n\n{\"prompt\":\"p\",\"answer\":\"c\",\"choices\":[\"a\",\"b\"]}]",
                &[
                    "example 1 (line 4)",
                    "`choices` does not contain the answer \"c\"",
                ],
            ),
            (
                "[{\"prompt\":\"p\",\"answer\":\"a\",\"choices\":[\"a\",1]}]",
                &["example 0", "`choices[1]` is a number"],
            ),
            (
                "[{\"prompt\":\"p\",\"answer\":\"a\",\"choices\":\"a\"}]",
                &["example 0", "`choices` is a string, not an array"],
            ),
            (
                "[{\"prompt\":\"p\",\"answer\":\"a\",\"source\":false}]",
                &["example 0", "`source` is a boolean"],
            ),
        ];
        for (text, needles) in cases {
            let mut all = vec!["d.json"];
            all.extend_from_slice(needles);
            assert_err(
                parse_trace(text.as_bytes(), "d.json"),
                "invalid_dataset",
                &all,
            );
        }
    }

    #[test]
    fn line_errors_name_line_and_example() {
        let good = "{\"prompt\":\"p\",\"answer\":\"a\"}";
        let cases: [(String, &[&str]); 4] = [
            (
                format!("{good}\n\n{{\"prompt\":\"p\",\n"),
                &["line 3 (example 1)", "not valid JSON"],
            ),
            (
                format!("{good}\n{good}\n{{\"prompt\":\"p\",\"answer\":null}}\n"),
                &["line 3 (example 2)", "`answer` is null"],
            ),
            (
                format!("{good}\n[1]\n"),
                &["line 2 (example 1)", "is an array, not an object"],
            ),
            (
                format!("{good}\n{{\"prompt\":\"p\",\"answer\":\"x\",\"choices\":[\"y\"]}}"),
                &["line 2 (example 1)", "does not contain the answer"],
            ),
        ];
        for (text, needles) in cases {
            assert_err(
                parse_trace(text.as_bytes(), "d.jsonl"),
                "invalid_dataset",
                needles,
            );
        }
    }

    #[test]
    fn empty_and_non_json() {
        for text in ["", "   \n", "[]", " [ ] "] {
            assert_err(
                parse_trace(text.as_bytes(), "e.json"),
                "invalid_dataset",
                &["e.json"],
            );
        }
        assert_err(
            parse_trace(b"[]", "e.json"),
            "invalid_dataset",
            &["no examples"],
        );
        assert_err(
            parse_trace(b"\xff\xfe", "e.json"),
            "invalid_dataset",
            &["not UTF-8"],
        );
        assert_err(
            parse_trace(b"[{\"prompt\": ", "e.json"),
            "invalid_dataset",
            &["not valid JSON"],
        );
    }
}

mod splits {
    use super::*;

    fn numbered(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| ex(&format!("p{i}"), &format!("a{i}")))
            .collect()
    }

    #[test]
    fn counts_follow_rounding_and_parts_are_disjoint() {
        for (n, e, t) in [
            (10, 0.1, 0.2),
            (7, 0.25, 0.5),
            (101, 0.05, 0.05),
            (3, 0.0, 0.0),
            (9, 0.15, 0.0),
        ] {
            let s = split(numbered(n), e, t, 42).unwrap();
            let (ne, nt) = (
                (e * n as f64).round() as usize,
                (t * n as f64).round() as usize,
            );
            assert_eq!(
                (s.eval.len(), s.test.len(), s.train.len()),
                (ne, nt, n - ne - nt)
            );
            let mut all: Vec<String> = s
                .train
                .iter()
                .chain(&s.eval)
                .chain(&s.test)
                .map(|x| x.prompt.clone())
                .collect();
            all.sort();
            let mut want: Vec<String> = numbered(n).into_iter().map(|x| x.prompt).collect();
            want.sort();
            assert_eq!(all, want);
        }
        // 7 · 0.25 = 1.75 → 2 and 7 · 0.5 = 3.5 → 4 (half away from zero).
        let s = split(numbered(7), 0.25, 0.5, 1).unwrap();
        assert_eq!((s.eval.len(), s.test.len(), s.train.len()), (2, 4, 1));
    }

    #[test]
    fn same_seed_same_split() {
        let a = split(numbered(50), 0.2, 0.2, 9).unwrap();
        let b = split(numbered(50), 0.2, 0.2, 9).unwrap();
        let c = split(numbered(50), 0.2, 0.2, 10).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.train, c.train);
        // A shuffle, not a cut of the original order.
        assert_ne!(a.train, numbered(50)[20..].to_vec());
    }

    #[test]
    fn bad_fractions() {
        let e = split(numbered(10), 1.0, 0.0, 0).unwrap_err();
        assert!(
            matches!(e, SplitError::BadFraction { which: "eval", .. }),
            "{e}"
        );
        let e = split(numbered(10), 0.1, -0.1, 0).unwrap_err();
        assert!(
            matches!(e, SplitError::BadFraction { which: "test", .. }),
            "{e}"
        );
        assert_eq!(e.code(), "bad_split_fraction");
        assert!(e.to_string().contains("[0, 1)"), "{e}");
        assert!(split(numbered(10), f64::NAN, 0.0, 0).is_err());
        let e = split(numbered(10), 0.5, 0.5, 0).unwrap_err();
        assert!(matches!(e, SplitError::NoRoomForTrain { .. }), "{e}");
        assert!(e.to_string().contains("less than 1"), "{e}");
        let e = split(numbered(1), 0.5, 0.0, 0).unwrap_err();
        assert_eq!(e.code(), "split_too_small");
    }
}

/// The tiny word tokenizer (`w{i}` is id i, `</s>` 2), with a BOS `<s>` (1) put before every
/// encoded text with special tokens when `bos`.
fn word_tokenizer(dir: &Path, bos: bool) -> Tokenizer {
    let t = TinyConfig {
        vocab: 64,
        ..TinyConfig::default()
    };
    write_tiny_tokenizer(dir, &t).unwrap();
    let path = dir.join("tokenizer.json");
    if bos {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        });
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    Tokenizer::from_file(&path).unwrap()
}

fn words(ids: impl IntoIterator<Item = u32>) -> String {
    ids.into_iter()
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The truncation rule, written out plainly: `(ids, answer_start, prompt cut, answer cut)`.
fn reference(
    prompt: &[u32],
    bos: bool,
    answer: &[u32],
    eos: u32,
    max: usize,
) -> (Vec<u32>, usize, bool, bool) {
    let mut p: Vec<u32> = Vec::new();
    if bos {
        p.push(1);
    }
    p.extend_from_slice(prompt);
    let mut a = answer.to_vec();
    a.push(eos);
    if p.len() + a.len() <= max {
        let start = p.len();
        p.extend(a);
        return (p, start, false, false);
    }
    let cap = std::cmp::max(max as i64 - p.len() as i64, (max / 2) as i64) as usize;
    let cut_answer = a.len() > cap;
    if cut_answer {
        a = a[..cap].to_vec();
    }
    let budget = max - a.len();
    let cut_prompt = p.len() > budget;
    if cut_prompt {
        let head: Vec<u32> = if bos { vec![1] } else { vec![] };
        let tail_len = budget - head.len();
        let tail = p[p.len() - tail_len..].to_vec();
        p = head.into_iter().chain(tail).collect();
    }
    let start = p.len();
    p.extend(a);
    (p, start, cut_prompt, cut_answer)
}

mod encoding {
    use super::*;

    const EOS: u32 = 2;

    fn run(tok: &Tokenizer, prompt: &[u32], answer: &[u32], max_len: usize) -> Encoded {
        encode(
            tok,
            &ex(
                &words(prompt.iter().copied()),
                &words(answer.iter().copied()),
            ),
            EOS,
            &EncodeOptions { max_len },
        )
        .unwrap()
    }

    #[test]
    fn literal_truncation_cases() {
        let dir = tempfile::tempdir().unwrap();
        let tok = word_tokenizer(dir.path(), false);
        let p10: Vec<u32> = (10..20).collect();
        let a10: Vec<u32> = (20..30).collect();

        let e = run(&tok, &[3, 4], &[5], 8);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (vec![3, 4, 5, 2], 2, Truncation::None)
        );

        // Prompt too long: the answer part (3 tokens) fits under max(8 − 10, 4); the prompt keeps
        // its last 5 tokens.
        let e = run(&tok, &p10, &[5, 6], 8);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (vec![15, 16, 17, 18, 19, 5, 6, 2], 5, Truncation::Prompt)
        );

        // Answer too long: cap = max(8 − 1, 4) = 7, cut from the right, the eos goes.
        let e = run(&tok, &[3], &a10, 8);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (vec![3, 20, 21, 22, 23, 24, 25, 26], 1, Truncation::Answer)
        );

        // Both: the answer keeps max(8 − 10, 4) = 4, the prompt its last 4.
        let e = run(&tok, &p10, &a10, 8);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (vec![16, 17, 18, 19, 20, 21, 22, 23], 4, Truncation::Both)
        );

        // Only the eos does not fit: the answer is complete but must not end, so it counts as cut.
        let e = run(&tok, &[3, 4, 5, 6], &[7, 8, 9, 10], 8);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (vec![3, 4, 5, 6, 7, 8, 9, 10], 4, Truncation::Answer)
        );
    }

    #[test]
    fn bos_stays_in_front() {
        let dir = tempfile::tempdir().unwrap();
        let tok = word_tokenizer(dir.path(), true);
        let p10: Vec<u32> = (10..20).collect();
        let e = run(&tok, &p10, &[5, 6], 8);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (vec![1, 16, 17, 18, 19, 5, 6, 2], 5, Truncation::Prompt)
        );
        let e = run(&tok, &[3], &[4], 8);
        assert_eq!(e.ids, vec![1, 3, 4, 2]);
    }

    #[test]
    fn rule_matches_reference_over_many_lengths() {
        let dir = tempfile::tempdir().unwrap();
        for bos in [false, true] {
            let sub = dir.path().join(format!("bos{bos}"));
            let tok = word_tokenizer(&sub, bos);
            for max in [4, 5, 8, 13] {
                for pl in 0..16u32 {
                    for al in 1..16u32 {
                        let p: Vec<u32> = (3..3 + pl).collect();
                        let a: Vec<u32> = (30..30 + al).collect();
                        let e = run(&tok, &p, &a, max);
                        let (ids, start, cp, ca) = reference(&p, bos, &a, EOS, max);
                        let want = match (cp, ca) {
                            (false, false) => Truncation::None,
                            (true, false) => Truncation::Prompt,
                            (false, true) => Truncation::Answer,
                            (true, true) => Truncation::Both,
                        };
                        let at = format!("bos {bos} max {max} prompt {pl} answer {al}");
                        assert_eq!(e.ids, ids, "{at}");
                        assert_eq!(e.answer_start, start, "{at}");
                        assert_eq!(e.truncated, want, "{at}");
                        assert!(e.ids.len() <= max, "{at}");
                    }
                }
            }
        }
    }

    #[test]
    fn byte_tokenizer_ids_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        write_byte_tokenizer(dir.path()).unwrap();
        let tok = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        let bytes = |s: &str| s.bytes().map(|b| u32::from(b) + 3).collect::<Vec<_>>();
        let e = encode(
            &tok,
            &ex("Question: 2+2?\nAnswer:", "4"),
            2,
            &EncodeOptions { max_len: 64 },
        )
        .unwrap();
        let mut want = bytes("Question: 2+2?\nAnswer:");
        let start = want.len();
        want.extend(bytes("4"));
        want.push(2);
        assert_eq!((e.ids, e.answer_start), (want, start));

        // A 30-byte prompt into 16 tokens: the answer part "ok"+eos (3) fits, the prompt keeps
        // its last 13 bytes.
        let prompt = "abcdefghijklmnopqrstuvwxyz0123";
        let e = encode(&tok, &ex(prompt, "ok"), 2, &EncodeOptions { max_len: 16 }).unwrap();
        let mut want = bytes(&prompt[17..]);
        want.extend(bytes("ok"));
        want.push(2);
        assert_eq!(
            (e.ids, e.answer_start, e.truncated),
            (want, 13, Truncation::Prompt)
        );
    }

    #[test]
    fn stats_and_errors_name_the_example() {
        let dir = tempfile::tempdir().unwrap();
        let tok = word_tokenizer(dir.path(), false);
        let p10 = words(10..20);
        let a10 = words(20..30);
        let examples = vec![
            ex("w3 w4", "w5"),
            ex(&p10, "w5 w6"),
            ex("w3", &a10),
            ex(&p10, &a10),
        ];
        let (enc, stats) =
            encode_all(&tok, &examples, 2, &EncodeOptions { max_len: 8 }, "t.json").unwrap();
        assert_eq!(enc.len(), 4);
        assert_eq!(stats.examples, 4);
        assert_eq!(stats.truncated_prompt, 2);
        assert_eq!(stats.truncated_answer, 2);
        assert_eq!(stats.tokens, 4 + 8 + 8 + 8);
        assert_eq!(stats.answer_tokens, 2 + 3 + 7 + 4);

        let bad = vec![ex("w3", "w4"), ex("w3", "")];
        assert_err(
            encode_all(&tok, &bad, 2, &EncodeOptions { max_len: 8 }, "t.json"),
            "invalid_dataset",
            &["t.json", "example 1", "has no tokens"],
        );
        // Whitespace only: the word tokenizer makes no tokens of it.
        let bad = vec![ex("w3", "w4"), ex("w3", "w4"), ex("w3", "  ")];
        assert_err(
            encode_all(&tok, &bad, 2, &EncodeOptions { max_len: 8 }, "t.json"),
            "invalid_dataset",
            &["example 2", "non-empty answer"],
        );
        assert_err(
            encode(&tok, &ex("w3", "w4"), 2, &EncodeOptions { max_len: 3 }),
            "invalid_dataset",
            &["at least 4"],
        );
    }

    #[test]
    fn eos_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let tok = word_tokenizer(dir.path(), false);
        assert_eq!(eos_id(&tok, &[7, 9]).unwrap(), 7);
        assert_eq!(eos_id(&tok, &[]).unwrap(), 2);
        let other = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1, "<|im_end|>": 2,
                      "<eos>": 3}, "unk_token": "<unk>"}
        });
        let tok = Tokenizer::from_bytes(serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(eos_id(&tok, &[]).unwrap(), 2);
        let none = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1}, "unk_token": "<unk>"}
        });
        let tok = Tokenizer::from_bytes(serde_json::to_vec(&none).unwrap()).unwrap();
        assert_err(
            eos_id(&tok, &[]),
            "invalid_model",
            &["the tokenizer has no end-of-sequence token; set eos_token_id in config.json"],
        );
    }
}

mod batches {
    use super::*;

    fn enc(ids: &[u32], answer_start: usize) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            answer_start,
            truncated: Truncation::None,
        }
    }

    #[test]
    fn pad_batch_shifts_and_masks_answer_targets() {
        let a = enc(&[1, 3, 4, 5, 2], 3);
        let b = enc(&[1, 6, 7, 2], 2);
        let c = enc(&[8, 2], 1);
        let batch = pad_batch(&[&a, &b, &c], 0);
        assert_eq!((batch.rows, batch.len), (3, 4));
        assert_eq!(batch.input, vec![1, 3, 4, 5, 1, 6, 7, 0, 8, 0, 0, 0]);
        assert_eq!(batch.targets, vec![3, 4, 5, 2, 6, 7, 2, 0, 2, 0, 0, 0]);
        let m = [0., 0., 1., 1., 0., 1., 1., 0., 1., 0., 0., 0.];
        assert_eq!(batch.mask, m.to_vec());
        assert_eq!((batch.tokens, batch.answer_tokens), (4 + 3 + 1, 2 + 2 + 1));

        let empty = pad_batch(&[], 0);
        assert_eq!((empty.rows, empty.len, empty.input.len()), (0, 0, 0));
    }

    #[test]
    fn pack_concatenates_into_rows() {
        let a = enc(&[1, 3, 4, 5, 2], 3);
        let b = enc(&[1, 6, 7, 2], 2);
        // Stream 1 3 4 5 2 1 6 7 2, answer positions 3 4 7 8; 8 inputs → rows of 3: 3, 3, 2.
        let out = pack_batches(&[&a, &b], 2, 3, 99);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].rows, out[0].len, out[1].rows), (2, 3, 1));
        assert_eq!(out[0].input, vec![1, 3, 4, 5, 2, 1]);
        assert_eq!(out[0].targets, vec![3, 4, 5, 2, 1, 6]);
        assert_eq!(out[0].mask, vec![0., 0., 1., 1., 0., 0.]);
        assert_eq!(out[1].input, vec![6, 7, 99]);
        assert_eq!(out[1].targets, vec![7, 2, 99]);
        assert_eq!(out[1].mask, vec![1., 1., 0.]);
        assert_eq!((out[0].tokens, out[0].answer_tokens), (6, 2));
        assert_eq!((out[1].tokens, out[1].answer_tokens), (2, 2));
        assert!(pack_batches(&[&a], 0, 3, 0).is_empty());
    }

    #[test]
    fn pack_and_pad_train_on_the_same_answer_tokens() {
        // Every example has a prompt, so each answer token is a target exactly once either way.
        let items: Vec<Encoded> = (0..9u32)
            .map(|i| {
                let p = 1 + (i as usize % 4);
                let a = 1 + (i as usize * 7 % 5);
                let ids: Vec<u32> = (0..(p + a) as u32).map(|t| 10 * i + t).collect();
                enc(&ids, p)
            })
            .collect();
        let refs: Vec<&Encoded> = items.iter().collect();
        let padded = pad_batch(&refs, 0);
        let want: usize = items.iter().map(|e| e.ids.len() - e.answer_start).sum();
        assert_eq!(padded.answer_tokens, want);
        for (rows, len) in [(1, 1), (2, 5), (3, 7), (4, 64)] {
            let packed = pack_batches(&refs, rows, len, 0);
            let got: usize = packed.iter().map(|b| b.answer_tokens).sum();
            let masked: f32 = packed.iter().flat_map(|b| b.mask.iter()).sum();
            let tokens: usize = packed.iter().map(|b| b.tokens).sum();
            let all: usize = items.iter().map(|e| e.ids.len()).sum();
            assert_eq!((got, masked as usize, tokens), (want, want, all - 1));
            assert!(
                packed
                    .iter()
                    .all(|b| b.rows <= rows && b.input.len() == b.rows * len)
            );
        }
    }
}

mod schedules {
    use super::*;

    fn per_task(draws: &[Draw], tasks: usize) -> Vec<BTreeMap<usize, usize>> {
        let mut out = vec![BTreeMap::new(); tasks];
        for d in draws {
            *out[d.task].entry(d.index).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn replay_counts_follow_the_formula() {
        for sizes in [
            vec![100, 50, 3],
            vec![37, 37],
            vec![10, 1, 2, 100],
            vec![4, 9],
        ] {
            for w in [0.05, 0.1, 0.25, 0.5, 1.0] {
                let m = Mixture::new(Schedule::Replay { fraction: w }, &sizes, 3).unwrap();
                let k = (w * sizes[0] as f64).round() as usize;
                let mut want = vec![sizes[0]];
                want.extend(std::iter::repeat_n(k, sizes.len() - 1));
                assert_eq!(m.counts(), want, "{sizes:?} {w}");
                let epoch = m.epoch(0);
                assert_eq!(epoch.len(), want.iter().sum::<usize>());
                let seen = per_task(&epoch, sizes.len());
                // The current task whole, once each.
                assert_eq!(seen[0].len(), sizes[0]);
                assert!(seen[0].values().all(|c| *c == 1));
                for (task, n) in sizes.iter().enumerate().skip(1) {
                    let drawn: usize = seen[task].values().sum();
                    assert_eq!(drawn, k);
                    assert!(seen[task].keys().all(|i| i < n));
                    if *n >= k {
                        assert!(seen[task].values().all(|c| *c == 1), "without replacement");
                    } else if k > 0 {
                        // With replacement: k draws from fewer than k examples repeat some.
                        assert!(seen[task].values().any(|c| *c > 1));
                    }
                }
            }
        }
    }

    #[test]
    fn replay_draws_once_and_reshuffles_per_epoch() {
        let m = Mixture::new(Schedule::Replay { fraction: 0.3 }, &[40, 100, 5], 11).unwrap();
        let (e0, e1) = (m.epoch(0), m.epoch(1));
        assert_ne!(e0, e1);
        assert_eq!(per_task(&e0, 3), per_task(&e1, 3));
        let again = Mixture::new(Schedule::Replay { fraction: 0.3 }, &[40, 100, 5], 11).unwrap();
        assert_eq!(again.epoch(0), e0);
        assert_eq!(again.epoch(7), m.epoch(7));
        let other = Mixture::new(Schedule::Replay { fraction: 0.3 }, &[40, 100, 5], 12).unwrap();
        assert_ne!(other.epoch(0), e0);
    }

    #[test]
    fn joint_upsamples_to_the_largest_task() {
        for sizes in [vec![5, 12, 3], vec![7, 7], vec![1, 10, 4, 9]] {
            let m = Mixture::new(Schedule::Joint, &sizes, 5).unwrap();
            let big = *sizes.iter().max().unwrap();
            assert_eq!(m.counts(), vec![big; sizes.len()]);
            let seen = per_task(&m.epoch(2), sizes.len());
            for (task, n) in sizes.iter().enumerate() {
                let (copies, rest) = (big / n, big % n);
                assert_eq!(seen[task].values().sum::<usize>(), big);
                assert_eq!(seen[task].len(), *n, "every example at least once");
                let extra = seen[task].values().filter(|c| **c == copies + 1).count();
                let base = seen[task].values().filter(|c| **c == copies).count();
                assert_eq!((extra, base), (rest, n - rest), "{sizes:?} task {task}");
            }
        }
    }

    #[test]
    fn plain_is_the_current_task_shuffled() {
        let m = Mixture::new(Schedule::Plain, &[20, 30], 1).unwrap();
        assert_eq!(m.counts(), vec![20, 0]);
        let e = m.epoch(0);
        let mut idx: Vec<usize> = e.iter().map(|d| d.index).collect();
        assert!(e.iter().all(|d| d.task == 0));
        assert_ne!(idx, (0..20).collect::<Vec<_>>());
        idx.sort();
        assert_eq!(idx, (0..20).collect::<Vec<_>>());
        assert_ne!(m.epoch(1), e);
    }

    #[test]
    fn refusals() {
        let e = Mixture::new(Schedule::Replay { fraction: 0.1 }, &[10], 0).unwrap_err();
        assert_eq!(e.code(), "no_past_data");
        assert_eq!(
            e.to_string(),
            "replay needs at least one earlier task's data: pass --past FILE"
        );
        let e = Mixture::new(Schedule::Joint, &[10], 0).unwrap_err();
        assert_eq!(e.code(), "no_past_data");
        for w in [0.0, -0.1, 1.5, f64::NAN] {
            let e = Mixture::new(Schedule::Replay { fraction: w }, &[10, 10], 0).unwrap_err();
            assert_eq!(e.code(), "bad_replay_fraction", "{w}");
        }
        assert!(Mixture::new(Schedule::Replay { fraction: 1.0 }, &[10, 10], 0).is_ok());
        let e = Mixture::new(Schedule::Replay { fraction: 0.1 }, &[10, 0], 0).unwrap_err();
        assert_eq!(e, ScheduleError::EmptyTask { task: 1 });
        assert_eq!(e.code(), "empty_task");
        let e = Mixture::new(Schedule::Plain, &[0], 0).unwrap_err();
        assert_eq!(e, ScheduleError::EmptyTask { task: 0 });
        let e = Mixture::new(Schedule::Plain, &[], 0).unwrap_err();
        assert_eq!(e.code(), "no_tasks");
    }
}

mod byte_tokenizer {
    use super::*;
    use clreg_engine::tiny::SplitMix64;

    #[test]
    fn ids_are_bytes_plus_three_and_text_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write_byte_tokenizer(dir.path()).unwrap();
        let tok = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(tok.get_vocab_size(true), BYTE_VOCAB);
        assert_eq!(
            ["<unk>", "<s>", "</s>"].map(|t| tok.token_to_id(t)),
            [Some(0), Some(1), Some(2)]
        );
        let mut texts: Vec<String> = vec![
            "Grüße, 世界! 🎉\n\ttabs  and   spaces ".to_string(),
            " leading space".to_string(),
            "\u{0}\u{7f}\u{a0}\u{ad}".to_string(),
        ];
        // Random text over every Unicode plane ('<' left out so no `<s>` appears by chance).
        let mut rng = SplitMix64::new(7);
        for _ in 0..40 {
            let len = (rng.next_u64() % 30) as usize;
            let s: String = (0..len)
                .filter_map(|_| {
                    let plane =
                        [0x80u64, 0x800, 0x1_0000, 0x11_0000][(rng.next_u64() % 4) as usize];
                    char::from_u32((rng.next_u64() % plane) as u32)
                })
                .filter(|c| *c != '<')
                .collect();
            texts.push(s);
        }
        for text in texts {
            let enc = tok.encode(text.as_str(), false).unwrap();
            let want: Vec<u32> = text.bytes().map(|b| u32::from(b) + 3).collect();
            assert_eq!(enc.get_ids(), want.as_slice(), "{text:?}");
            assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        }
    }
}

mod suite {
    use super::*;

    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    const SIZES: SuiteSizes = SuiteSizes {
        train: 40,
        eval: 10,
        test: 10,
    };

    #[test]
    fn same_seed_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_suite(&a, 5, SIZES).unwrap();
        write_suite(&b, 5, SIZES).unwrap();
        write_suite(&c, 6, SIZES).unwrap();
        let (fa, fb, fc) = (files(&a), files(&b), files(&c));
        assert_eq!(fa.len(), 7 * 3 + 2);
        assert_eq!(fa, fb);
        for task in [
            "cstance/train.json",
            "metamath/test.json",
            "py150/eval.json",
        ] {
            assert_ne!(fa[task], fc[task], "{task}");
        }
    }

    #[test]
    fn files_are_valid_and_described() {
        let dir = tempfile::tempdir().unwrap();
        let suite = write_suite(dir.path(), 1, SIZES).unwrap();
        let on_disk: Suite =
            serde_json::from_slice(&std::fs::read(dir.path().join("suite.json")).unwrap()).unwrap();
        assert_eq!(on_disk, suite);
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("suite.json")).unwrap()).unwrap();
        assert_eq!(raw["old_knowledge"]["test"], "facts/test.json");
        assert_eq!(raw["tasks"][0]["counts"]["train"], 40);
        let names: Vec<&str> = suite.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cstance",
                "fomc",
                "meetingbank",
                "py150",
                "scienceqa",
                "20minuten",
                "metamath"
            ]
        );
        let metrics: Vec<&str> = suite.tasks.iter().map(|t| t.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                "exact",
                "exact",
                "rouge_l",
                "edit_sim",
                "first_char",
                "sari",
                "final_number"
            ]
        );
        for task in &suite.tasks {
            let mut prompts = HashSet::new();
            for (rel, n) in [(&task.train, 40), (&task.eval, 10), (&task.test, 10)] {
                let examples = read_trace(&dir.path().join(rel)).unwrap();
                assert_eq!(examples.len(), n, "{rel}");
                for e in examples {
                    assert!(
                        prompts.insert(e.prompt.clone()),
                        "{rel}: repeated {:?}",
                        e.prompt
                    );
                    assert!(!e.answer.is_empty());
                    if task.kind == "classification" {
                        assert!(e.prompt.len() <= 120, "{rel}: {} bytes", e.prompt.len());
                    }
                    check_rule(&task.name, &e);
                }
            }
        }
        assert_eq!(
            (
                suite.old_knowledge.name.as_str(),
                suite.old_knowledge.metric.as_str()
            ),
            ("facts", "mc")
        );
        let facts = read_trace(&dir.path().join(&suite.old_knowledge.test)).unwrap();
        assert!(facts.len() >= 40);
        let capital = facts
            .iter()
            .find(|f| f.prompt == "The capital of France is")
            .unwrap();
        assert_eq!(capital.answer, " Paris");
        for f in &facts {
            let choices = f.choices.as_ref().unwrap();
            assert_eq!(choices.len(), 4);
            assert_eq!(choices.iter().filter(|c| **c == f.answer).count(), 1);
        }
    }

    /// The rule a task teaches, checked from the prompt alone.
    fn check_rule(task: &str, e: &Example) {
        let has = |w: &str| e.prompt.contains(w);
        match task {
            "cstance" => {
                let label = if has("support") || has("love") || has("back ") || has("great") {
                    "A"
                } else if has("oppose") || has("hate") || has("stop") || has("terrible") {
                    "B"
                } else {
                    "C"
                };
                assert_eq!(e.answer, label, "{}", e.prompt);
            }
            "fomc" => {
                let label = if has("raise") || has("hike") || has("tight") {
                    "hawkish"
                } else if has("lower") || has("cut") || has("eas") {
                    "dovish"
                } else {
                    "neutral"
                };
                assert_eq!(e.answer, label, "{}", e.prompt);
            }
            "scienceqa" => {
                let letter = e.answer.chars().next().unwrap();
                assert!("ABCD".contains(letter));
                assert!(has(&format!("\n{letter}. ")));
            }
            "20minuten" => {
                let source = e.source.as_ref().unwrap();
                assert_eq!(e.prompt, format!("Simplify: {source}\nSimple:"));
                assert!(e.answer.len() < source.len());
            }
            "metamath" => {
                // "a op b = c. The answer is c", with c right.
                let (step, answer) = e.answer.split_once(". The answer is ").unwrap();
                let parts: Vec<&str> = step.split(' ').collect();
                let (a, b, c): (i64, i64, i64) = (
                    parts[0].parse().unwrap(),
                    parts[2].parse().unwrap(),
                    parts[4].parse().unwrap(),
                );
                let want = match parts[1] {
                    "+" => a + b,
                    "-" => a - b,
                    "*" => a * b,
                    op => panic!("unknown op {op}"),
                };
                assert_eq!((c, answer.parse::<i64>().unwrap()), (want, want));
                let numbers: Vec<i64> = e
                    .prompt
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|w| w.parse().ok())
                    .collect();
                assert_eq!(numbers, [a, b], "{}", e.prompt);
            }
            "meetingbank" => {
                let vote = e.answer.split(" to ").collect::<Vec<_>>();
                assert!(has(&format!("passed {} to {}", &vote[0][18..], vote[1])));
            }
            "py150" => {
                assert!(e.prompt.ends_with(":\n") || e.prompt.ends_with("\n"));
            }
            _ => unreachable!("{task}"),
        }
    }

    #[test]
    fn refuses_empty_splits() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = SuiteSizes {
            train: 10,
            eval: 0,
            test: 1,
        };
        assert_err(
            write_suite(dir.path(), 1, sizes),
            "invalid_dataset",
            &["at least one"],
        );
        let huge = SuiteSizes {
            train: 1_000_000,
            eval: 1,
            test: 1,
        };
        assert_err(
            write_suite(dir.path(), 1, huge),
            "invalid_dataset",
            &["distinct examples"],
        );
    }
}
