//! The parser against tables of valid and invalid references, mostly taken
//! from the cases Docker's own reference parser documents.

use super::*;

const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn sha384() -> String {
    "0123456789abcdef".repeat(6)
}

fn sha512() -> String {
    "0123456789abcdef".repeat(8)
}

/// `(input, registry, path, tag, digest, canonical form)`.
type Valid = (
    String,
    &'static str,
    String,
    Option<String>,
    Option<String>,
    String,
);

fn valid_cases() -> Vec<Valid> {
    let case = |input: &str,
                registry,
                path: &str,
                tag: Option<&str>,
                digest: Option<&str>,
                canonical: &str| {
        (
            input.to_owned(),
            registry,
            path.to_owned(),
            tag.map(str::to_owned),
            digest.map(str::to_owned),
            canonical.to_owned(),
        )
    };
    let sha256 = format!("sha256:{SHA256}");
    let long_tag = "t".repeat(128);
    vec![
        // Docker Hub: no registry, `library/` for single components.
        case(
            "nginx",
            "docker.io",
            "library/nginx",
            None,
            None,
            "docker.io/library/nginx",
        ),
        case(
            "nginx:1.27",
            "docker.io",
            "library/nginx",
            Some("1.27"),
            None,
            "docker.io/library/nginx:1.27",
        ),
        case(
            "library/nginx",
            "docker.io",
            "library/nginx",
            None,
            None,
            "docker.io/library/nginx",
        ),
        case(
            "bitnami/redis:7.2",
            "docker.io",
            "bitnami/redis",
            Some("7.2"),
            None,
            "docker.io/bitnami/redis:7.2",
        ),
        case(
            "docker.io/nginx",
            "docker.io",
            "library/nginx",
            None,
            None,
            "docker.io/library/nginx",
        ),
        case(
            "docker.io/library/nginx:latest",
            "docker.io",
            "library/nginx",
            Some("latest"),
            None,
            "docker.io/library/nginx:latest",
        ),
        case(
            "index.docker.io/nginx",
            "docker.io",
            "library/nginx",
            None,
            None,
            "docker.io/library/nginx",
        ),
        case(
            "index.docker.io/bitnami/redis",
            "docker.io",
            "bitnami/redis",
            None,
            None,
            "docker.io/bitnami/redis",
        ),
        case(
            "a/b/c/d/e",
            "docker.io",
            "a/b/c/d/e",
            None,
            None,
            "docker.io/a/b/c/d/e",
        ),
        // No `.`, `:` or upper case, not `localhost`: a Docker Hub namespace.
        case(
            "my-registry/app",
            "docker.io",
            "my-registry/app",
            None,
            None,
            "docker.io/my-registry/app",
        ),
        // A single component is a Docker Hub name: the `:` starts a tag.
        case(
            "localhost",
            "docker.io",
            "library/localhost",
            None,
            None,
            "docker.io/library/localhost",
        ),
        case(
            "localhost:5000",
            "docker.io",
            "library/localhost",
            Some("5000"),
            None,
            "docker.io/library/localhost:5000",
        ),
        case(
            "example.com",
            "docker.io",
            "library/example.com",
            None,
            None,
            "docker.io/library/example.com",
        ),
        // Other registries.
        case(
            "localhost/app",
            "localhost",
            "app",
            None,
            None,
            "localhost/app",
        ),
        case(
            "localhost:5000/app:dev",
            "localhost:5000",
            "app",
            Some("dev"),
            None,
            "localhost:5000/app:dev",
        ),
        case(
            "example.com/app",
            "example.com",
            "app",
            None,
            None,
            "example.com/app",
        ),
        case(
            "registry.example.com/team/app:v1.2.3",
            "registry.example.com",
            "team/app",
            Some("v1.2.3"),
            None,
            "registry.example.com/team/app:v1.2.3",
        ),
        case(
            "registry.example.com:5000/app",
            "registry.example.com:5000",
            "app",
            None,
            None,
            "registry.example.com:5000/app",
        ),
        case(
            "registry:5000/app",
            "registry:5000",
            "app",
            None,
            None,
            "registry:5000/app",
        ),
        case(
            "127.0.0.1:5000/app",
            "127.0.0.1:5000",
            "app",
            None,
            None,
            "127.0.0.1:5000/app",
        ),
        case(
            "[::1]:5000/app",
            "[::1]:5000",
            "app",
            None,
            None,
            "[::1]:5000/app",
        ),
        case(
            "[fe80::1:2]/app:v1",
            "[fe80::1:2]",
            "app",
            Some("v1"),
            None,
            "[fe80::1:2]/app:v1",
        ),
        case(
            "xn--bcher-kva.example/app",
            "xn--bcher-kva.example",
            "app",
            None,
            None,
            "xn--bcher-kva.example/app",
        ),
        // Host names are case-insensitive; a capitalised first component
        // cannot be a path, so it is a registry.
        case(
            "Registry.Example.com/app",
            "Registry.Example.com",
            "app",
            None,
            None,
            "Registry.Example.com/app",
        ),
        case("Foo/bar", "Foo", "bar", None, None, "Foo/bar"),
        // Path separators.
        case(
            "quay.io/a-b/c__d/e.f/g--h/i_j",
            "quay.io",
            "a-b/c__d/e.f/g--h/i_j",
            None,
            None,
            "quay.io/a-b/c__d/e.f/g--h/i_j",
        ),
        case("0/1", "docker.io", "0/1", None, None, "docker.io/0/1"),
        // Tags: letters of both cases, digits, `_`, `.`, `-`; up to 128.
        case(
            "nginx:1.27.3-alpine_SLIM",
            "docker.io",
            "library/nginx",
            Some("1.27.3-alpine_SLIM"),
            None,
            "docker.io/library/nginx:1.27.3-alpine_SLIM",
        ),
        case(
            "nginx:_x",
            "docker.io",
            "library/nginx",
            Some("_x"),
            None,
            "docker.io/library/nginx:_x",
        ),
        case(
            &format!("nginx:{long_tag}"),
            "docker.io",
            "library/nginx",
            Some(&long_tag),
            None,
            &format!("docker.io/library/nginx:{long_tag}"),
        ),
        // Digests, with or without a tag.
        case(
            &format!("nginx@{sha256}"),
            "docker.io",
            "library/nginx",
            None,
            Some(&sha256),
            &format!("docker.io/library/nginx@{sha256}"),
        ),
        case(
            &format!("nginx:1.27@{sha256}"),
            "docker.io",
            "library/nginx",
            Some("1.27"),
            Some(&sha256),
            &format!("docker.io/library/nginx:1.27@{sha256}"),
        ),
        case(
            &format!("ghcr.io/org/sub/app@{sha256}"),
            "ghcr.io",
            "org/sub/app",
            None,
            Some(&sha256),
            &format!("ghcr.io/org/sub/app@{sha256}"),
        ),
        case(
            &format!("localhost:5000/app:v2@{sha256}"),
            "localhost:5000",
            "app",
            Some("v2"),
            Some(&sha256),
            &format!("localhost:5000/app:v2@{sha256}"),
        ),
        case(
            &format!("app@sha384:{}", sha384()),
            "docker.io",
            "library/app",
            None,
            Some(&format!("sha384:{}", sha384())),
            &format!("docker.io/library/app@sha384:{}", sha384()),
        ),
        case(
            &format!("app@sha512:{}", sha512()),
            "docker.io",
            "library/app",
            None,
            Some(&format!("sha512:{}", sha512())),
            &format!("docker.io/library/app@sha512:{}", sha512()),
        ),
    ]
}

#[test]
fn valid_references_parse() {
    for (input, registry, path, tag, digest, canonical) in valid_cases() {
        let reference = Reference::parse(&input).unwrap_or_else(|error| panic!("{input}: {error}"));
        assert_eq!(reference.registry(), registry, "{input}");
        assert_eq!(reference.path(), path, "{input}");
        assert_eq!(reference.tag(), tag.as_deref(), "{input}");
        assert_eq!(
            reference.digest().map(ToString::to_string),
            digest,
            "{input}"
        );
        assert_eq!(reference.to_string(), canonical, "{input}");
        // The canonical form means the same image.
        assert_eq!(
            Reference::parse(&canonical),
            Ok(reference.clone()),
            "{input}"
        );
        assert_eq!(input.parse::<Reference>(), Ok(reference), "{input}");
    }
}

#[test]
fn digests_expose_their_parts() {
    let reference = Reference::parse(&format!("nginx@sha256:{SHA256}")).unwrap();
    let digest = reference.digest().unwrap();
    assert_eq!(digest.algorithm(), "sha256");
    assert_eq!(digest.encoded(), SHA256);
}

fn invalid_cases() -> Vec<(String, ReferenceError)> {
    use ReferenceError::*;
    let case = |input: &str, error: ReferenceError| (input.to_owned(), error);
    let component = |c: &str| InvalidPathComponent(c.to_owned());
    let registry = |r: &str| InvalidRegistry(r.to_owned());
    let tag = |t: &str| InvalidTag(t.to_owned());
    let hex = |algorithm, length, found: &str| InvalidDigestHex {
        algorithm,
        length,
        found: found.to_owned(),
    };
    let long_path = "a".repeat(240);
    vec![
        case("", Empty),
        case(SHA256, ImageId),
        // Paths.
        case("Nginx", UppercasePath("Nginx".into())),
        case("library/Nginx:1.0", UppercasePath("library/Nginx".into())),
        case(
            "registry.example.com/Team/app",
            UppercasePath("Team/app".into()),
        ),
        case(":1.0", EmptyPath),
        case("docker.io/", EmptyPath),
        case("localhost:5000/:v1", EmptyPath),
        case(&format!("@sha256:{SHA256}"), EmptyPath),
        case("a//b", component("")),
        case("nginx/", component("")),
        case("a..b", component("a..b")),
        case("a___b", component("a___b")),
        case("a_.b", component("a_.b")),
        case("-a", component("-a")),
        case("a-", component("a-")),
        case("_a", component("_a")),
        case("a/b.", component("b.")),
        case("nginx latest", component("nginx latest")),
        case("ngínx", component("ngínx")),
        case("registry.example.com/app+x", component("app+x")),
        // Registries.
        case("registry_example.com/app", registry("registry_example.com")),
        case("-registry.com/app", registry("-registry.com")),
        case("registry-.com/app", registry("registry-.com")),
        case("registry..com/app", registry("registry..com")),
        case(".registry.com/app", registry(".registry.com")),
        case("registry.com:/app", registry("registry.com:")),
        case("registry.com:http/app", registry("registry.com:http")),
        case("registry.com:5000:1/app", registry("registry.com:5000:1")),
        case("https://registry.com/app", registry("https:")),
        case("[::1/app", registry("[::1")),
        case("[]:5000/app", registry("[]:5000")),
        case("[::g]/app", registry("[::g]")),
        case("[::1]5000/app", registry("[::1]5000")),
        // A tag with a `/` makes its name a registry with a bad port.
        case("nginx:1.0/x", registry("nginx:1.0")),
        // Tags.
        case("nginx:", tag("")),
        case("nginx:-1", tag("-1")),
        case("nginx:.hidden", tag(".hidden")),
        case("nginx:1.0:2.0", tag("1.0:2.0")),
        case("nginx:v1+build", tag("v1+build")),
        case(&format!("nginx:{}", "t".repeat(129)), tag(&"t".repeat(129))),
        // Digests.
        case("nginx@", InvalidDigest(String::new())),
        case("nginx@sha256", InvalidDigest("sha256".into())),
        case("nginx@:abc", InvalidDigest(":abc".into())),
        case("nginx@md5:xyz", InvalidDigest("md5:xyz".into())),
        case(
            &format!("nginx@1sha:{SHA256}"),
            InvalidDigest(format!("1sha:{SHA256}")),
        ),
        case(
            &format!("nginx@md5:{}", &SHA256[..32]),
            UnsupportedDigestAlgorithm("md5".into()),
        ),
        case(
            &format!("nginx@blake3+x:{SHA256}"),
            UnsupportedDigestAlgorithm("blake3+x".into()),
        ),
        case("nginx@sha256:abc", hex("sha256", 64, "abc")),
        case(
            &format!("nginx@sha256:{}", &SHA256[..63]),
            hex("sha256", 64, &SHA256[..63]),
        ),
        case(
            &format!("nginx@sha256:{SHA256}0"),
            hex("sha256", 64, &format!("{SHA256}0")),
        ),
        case(
            &format!("nginx@sha256:{}", SHA256.to_uppercase()),
            hex("sha256", 64, &SHA256.to_uppercase()),
        ),
        case(
            &format!("nginx@sha256:{}g", &SHA256[..63]),
            hex("sha256", 64, &format!("{}g", &SHA256[..63])),
        ),
        case(
            &format!("nginx@sha256:{SHA256}@sha256:{SHA256}"),
            hex("sha256", 64, &format!("{SHA256}@sha256:{SHA256}")),
        ),
        case(
            &format!("nginx@sha512:{SHA256}"),
            hex("sha512", 128, SHA256),
        ),
        case(
            &format!("nginx@SHA256:{SHA256}"),
            UnsupportedDigestAlgorithm("SHA256".into()),
        ),
        // Length of the whole name, `docker.io/library/` included.
        case(
            &format!("registry.example.com/{long_path}"),
            NameTooLong(21 + 240),
        ),
        case(&"a".repeat(238), NameTooLong(18 + 238)),
    ]
}

#[test]
fn invalid_references_are_rejected() {
    for (input, error) in invalid_cases() {
        assert_eq!(Reference::parse(&input), Err(error), "{input:?}");
    }
}

#[test]
fn the_longest_names_are_accepted() {
    // 18 characters of `docker.io/library/` and 237 of path: 255 in all.
    let reference = Reference::parse(&"a".repeat(237)).unwrap();
    assert_eq!(reference.to_string().len(), 255);
    let reference = Reference::parse(&format!("registry.example.com/{}", "a".repeat(234))).unwrap();
    assert_eq!(reference.to_string().len(), 255);
}

#[test]
fn errors_explain_themselves() {
    let message = |input: &str| Reference::parse(input).unwrap_err().to_string();
    assert_eq!(message(""), "the reference is empty");
    assert_eq!(
        message(SHA256),
        "64 hexadecimal digits are an image ID, not a repository name"
    );
    assert_eq!(
        message("Nginx"),
        r#"repository name "Nginx" must be lowercase"#
    );
    assert_eq!(message(":1"), "the repository name is empty");
    assert_eq!(
        message("a..b"),
        r#"invalid repository name component "a..b": components are lowercase letters and digits, separated by `.`, `_`, `__` or dashes, and start and end with a letter or digit"#
    );
    assert_eq!(
        message("registry_example.com/app"),
        r#"invalid registry "registry_example.com": expected a host name, an IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port number"#
    );
    assert_eq!(
        message("nginx:-1"),
        r#"invalid tag "-1": a tag is 1 to 128 letters, digits, `_`, `.` and `-`, and does not start with `.` or `-`"#
    );
    assert_eq!(
        message("nginx@sha256"),
        r#"invalid digest "sha256": expected an algorithm, `:` and at least 32 hexadecimal digits, e.g. `sha256:` and 64 digits"#
    );
    assert_eq!(
        message(&format!("nginx@md5:{}", &SHA256[..32])),
        r#"unsupported digest algorithm "md5" (supported: sha256, sha384, sha512)"#
    );
    assert_eq!(
        message("nginx@sha256:abc"),
        r#"invalid sha256 digest "abc": expected 64 lowercase hexadecimal digits"#
    );
    assert_eq!(
        message(&"a".repeat(300)),
        "the repository name is 318 characters long, more than the maximum of 255"
    );
    // Odd characters are escaped, not printed raw.
    assert_eq!(
        message("nginx:\"\n"),
        r#"invalid tag "\"\n": a tag is 1 to 128 letters, digits, `_`, `.` and `-`, and does not start with `.` or `-`"#
    );
}

#[test]
fn registries_are_validated_on_their_own() {
    for registry in [
        "docker.io",
        "registry.example.com",
        "localhost",
        "localhost:5000",
        "registry",
        "127.0.0.1",
        "10.0.0.1:443",
        "[::1]",
        "[2001:db8::1]:5000",
        "Registry.Example.COM",
    ] {
        assert_eq!(validate_registry(registry), Ok(()), "{registry}");
    }
    for registry in [
        "",
        ".",
        "registry.",
        "-a.com",
        "a_b.com",
        "a.com:",
        "a.com:x",
        "a.com:1:2",
        "[::1",
        "[]",
        "[::1]:",
        "[::1]x",
        "a.com/x",
        "https://a.com",
        "a com",
    ] {
        assert_eq!(
            validate_registry(registry),
            Err(ReferenceError::InvalidRegistry(registry.to_owned())),
            "{registry}"
        );
    }
}
