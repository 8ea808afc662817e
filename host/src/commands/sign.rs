//! `portcullis sign` and `verify-signature`: cosign-compatible key
//! signatures of policies in registries, so authors need no other tool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use portcullis::source::VerificationConfig;
use portcullis::source::verify::{PublicKey, SigningKey};

use super::registry::{pinned, registry_reference};
use crate::cli::FetchArgs;

/// Arguments of `portcullis sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The policy: `registry://HOST/REPO:TAG` (its tag is resolved now) or `…@sha256:…`.
    pub uri: String,
    /// The private key: PEM, unencrypted PKCS#8, ECDSA P-256 (`openssl genpkey
    /// -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    #[arg(long)]
    pub key: PathBuf,
    /// An annotation the signature carries (`KEY=VALUE`, repeatable), like `cosign sign -a`.
    #[arg(long = "annotation", short = 'a', value_parser = key_value)]
    pub annotations: Vec<(String, String)>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// Arguments of `portcullis verify-signature`.
#[derive(Debug, Args)]
pub struct VerifySignatureArgs {
    /// The policy: `registry://HOST/REPO:TAG` or `…@sha256:…`.
    pub uri: String,
    /// A public key (PEM) that must have signed it (repeatable: every one
    /// must); instead of --verification-path.
    #[arg(
        long,
        conflicts_with = "verification_path",
        required_unless_present = "verification_path"
    )]
    pub key: Vec<PathBuf>,
    /// An annotation each --key signature must carry (`KEY=VALUE`, repeatable).
    #[arg(long = "annotation", short = 'a', value_parser = key_value, requires = "key")]
    pub annotations: Vec<(String, String)>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Runs `portcullis sign`: prints the signed reference and the signature manifest.
pub async fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let reference = registry_reference(&args.uri)?;
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read the key {}", args.key.display()))?;
    let key =
        SigningKey::from_pem(&text).with_context(|| format!("the key {}", args.key.display()))?;
    let annotations: BTreeMap<String, String> = args.annotations.into_iter().collect();
    // Signing needs no store; the default one is never written.
    let signed = super::fetcher(&args.fetch, None)?
        .sign(&reference, &key, &annotations)
        .await
        .with_context(|| format!("cannot sign {}", args.uri))?;
    println!("signed     {}", pinned(&reference, &signed.digest));
    println!("signature  registry://{}", signed.signatures.whole());
    println!("key        {}", key.public_key().fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// Runs `portcullis verify-signature`: prints the verified reference, or
/// fails naming each requirement that does not hold.
pub async fn verify_signature(args: VerifySignatureArgs) -> anyhow::Result<ExitCode> {
    let reference = registry_reference(&args.uri)?;
    let mut fetch_args = args.fetch.clone();
    let config = match fetch_args.verification_path.take() {
        Some(path) => VerificationConfig::load_supported(&path)?,
        None => {
            let mut keys = Vec::with_capacity(args.key.len());
            for path in &args.key {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the key {}", path.display()))?;
                let key = PublicKey::from_pem(&text)
                    .with_context(|| format!("the key {}", path.display()))?;
                keys.push((path.display().to_string(), key));
            }
            if keys.is_empty() {
                bail!("give --key or --verification-path");
            }
            let annotations = args.annotations.into_iter().collect();
            VerificationConfig::all_of_keys(keys, &annotations)
        }
    };
    let verified = super::fetcher(&fetch_args, None)?
        .verify_signatures(&reference, &config)
        .await
        .with_context(|| format!("{} is not verified", args.uri))?;
    println!(
        "verified   {} ({} signatures)",
        pinned(&reference, &verified.digest),
        verified.signatures
    );
    Ok(ExitCode::SUCCESS)
}
