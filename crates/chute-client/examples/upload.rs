//! Uploads a file to a chute server and downloads it back, both checked: the README's
//! ten lines. `CHUTE_URL` (default http://127.0.0.1:8080) and `CHUTE_TOKEN` say where and who.
//!
//! ```sh
//! cargo run -p chute-client --example upload -- big.iso copy.iso
//! ```

#[tokio::main]
async fn main() -> Result<(), chute_client::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(copy)) = (args.next(), args.next()) else {
        return Err(chute_client::Error::Usage("usage: upload FILE COPY".into()));
    };
    let server = std::env::var("CHUTE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("CHUTE_TOKEN").unwrap_or_default();
    let client = chute_client::Client::new(&server)?.token(token);
    let up = client
        .upload_file(path.as_ref(), &Default::default(), |p| {
            eprint!("\r{} of {} bytes", p.sent, p.total)
        })
        .await?;
    let file = up.file_url.unwrap_or_default();
    let got = client.download(&file, copy.as_ref(), |_| {}).await?;
    println!(
        "\n{file}: {} bytes, digest {} checked",
        got.size, got.digest
    );
    Ok(())
}
