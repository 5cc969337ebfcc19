//! A standalone S3 server for the topology tests: s3s-fs (a real S3 implementation over a
//! directory) as a process of its own, so a test can run the registry the way it is deployed.
//!
//!   s3-server ROOT BUCKET
//!
//! Listens on a free loopback port and prints its endpoint (`http://127.0.0.1:PORT`) on stdout;
//! the access key is `test-access`, the secret `test-secret-key`. Runs until killed.

use std::io::Write as _;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(bucket)) = (args.next(), args.next()) else {
        eprintln!("usage: s3-server ROOT BUCKET");
        std::process::exit(2);
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (endpoint, task) = clreg_tests::serve_s3(std::path::Path::new(&root), &bucket, listener);
    println!("{endpoint}");
    std::io::stdout().flush().expect("stdout");
    task.await.expect("s3 server");
}
