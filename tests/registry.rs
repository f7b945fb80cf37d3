//! The built-in image registry (`/v2/` on the API port) with real clients:
//! `docker push`/`docker pull` of a locally built image, `skopeo copy --all`
//! of a two-platform OCI index in and out with the same digests, `skopeo
//! inspect`, and raw HTTP for the spec's strict points and bad input
//! (nothing half-stored). Docker treats 127.0.0.0/8 as an insecure
//! registry, so no TLS is needed here. Each test logs in with its own
//! `DOCKER_CONFIG` and removes the image tags it made.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use common::cluster::TestServer;
use common::images::{self, docker_in, DockerTags};

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A one-server control plane whose registry the test uses.
struct Registry {
    server: TestServer,
    _root: tempfile::TempDir,
    /// `docker`'s config dir for this test (its login lives there).
    docker_config: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        let root = tempfile::tempdir().unwrap();
        // Plain text (--insecure): these tests drive the door's and the registry's
        // own authentication with raw HTTP/1.1 clients; TLS is tests/security.rs's.
        let server = TestServer::start(root.path(), "server", &["--bootstrap"], &["--insecure"]);
        server.wait_ready().await;
        Registry {
            server,
            _root: root,
            docker_config: tempfile::tempdir().unwrap(),
        }
    }

    fn host(&self) -> &str {
        &self.server.address
    }

    fn orc(&self, args: &[&str]) -> (bool, String, String) {
        orc_at(&self.server.address, args)
    }

    fn password(&self) -> String {
        let (ok, out, err) = self.orc(&["ecr", "get-login-password"]);
        assert!(ok, "get-login-password failed: {err}");
        out.trim().to_string()
    }

    fn docker(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        docker_in(self.docker_config.path(), args, stdin)
    }

    /// One raw HTTP/1.1 request; the answer's status, headers (lower-case
    /// names) and body.
    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        self.http_raw(method, path, headers, body, Some(body.len()))
    }

    /// As `http`, with `content_length` declared (a longer one makes a
    /// truncated body: the request's write side is closed early).
    fn http_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        content_length: Option<usize>,
    ) -> Answer {
        let mut stream = TcpStream::connect(self.host()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.host()
        );
        if let Some(length) = content_length {
            request.push_str(&format!("Content-Length: {length}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        // A server may answer (413) and close before reading a big body.
        let _ = stream.write_all(body);
        if content_length.is_some_and(|l| l > body.len()) {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        Answer::parse(&raw)
    }

    fn authorization(&self) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", self.password()))
        )
    }

    /// Pushes a blob in one request; returns its digest.
    fn push_blob(&self, auth: &str, name: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let answer = self.http(
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={d}"),
            &[("Authorization", auth)],
            bytes,
        );
        assert_eq!(answer.status, 201, "{answer:?}");
        d
    }

    fn put_manifest(
        &self,
        auth: &str,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Answer {
        self.http(
            "PUT",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Authorization", auth), ("Content-Type", media_type)],
            body,
        )
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
        {
            body = dechunk(&body);
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The spec's error code of an error answer.
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_with_credentials_and_pulls_back() {
    let registry = Registry::start().await;
    let reference = format!("{}/orc-test/registry-docker:1", registry.host());
    let _cleanup = DockerTags(vec![reference.clone()]);
    images::busybox_image(&reference);

    // Without credentials the push is refused.
    let (ok, text) = registry.docker(&["push", &reference], None);
    assert!(!ok, "a push without credentials went through: {text}");
    assert!(
        text.contains("no basic auth credentials") || text.contains("unauthorized"),
        "{text}"
    );
    let answer = registry.http("POST", "/v2/orc-test/x/blobs/uploads/", &[], b"");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.code(), "UNAUTHORIZED");
    assert!(answer
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
    // An anonymous token pulls only.
    let token = registry.http(
        "GET",
        "/v2/token?service=orc&scope=repository:orc-test/x:pull,push",
        &[],
        b"",
    );
    assert_eq!(token.status, 200);
    let bearer = format!("Bearer {}", token.json()["token"].as_str().unwrap());
    assert_eq!(
        registry
            .http("GET", "/v2/", &[("Authorization", &bearer)], b"")
            .status,
        200
    );
    let answer = registry.http(
        "POST",
        "/v2/orc-test/x/blobs/uploads/",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(answer.status, 401);
    // A wrong password gets no token.
    let wrong = registry.http(
        "GET",
        "/v2/token",
        &[(
            "Authorization",
            "Basic QVdTOm9yYzEuOTk5OTk5OTk5OTk5OTkuYWJj",
        )],
        b"",
    );
    assert_eq!(wrong.status, 401);

    let password = registry.password();
    let (ok, text) = registry.docker(
        &[
            "login",
            "--username",
            "AWS",
            "--password-stdin",
            registry.host(),
        ],
        Some(&password),
    );
    assert!(ok, "docker login failed: {text}");
    let (ok, text) = registry.docker(&["push", &reference], None);
    assert!(ok, "docker push failed: {text}");
    let pushed = text
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("docker push prints the digest")
        .to_string();

    let (ok, text) = registry.docker(&["rmi", &reference], None);
    assert!(ok, "docker rmi failed: {text}");
    let (ok, text) = registry.docker(&["pull", &reference], None);
    assert!(ok, "docker pull failed: {text}");
    assert!(
        text.contains(&pushed),
        "the pull got another digest: {text}"
    );

    let (ok, out, err) = registry.orc(&[
        "--output",
        "json",
        "ecr",
        "describe-images",
        "--repository-name",
        "orc-test/registry-docker",
    ]);
    assert!(ok, "{err}");
    let details: Value = serde_json::from_str(&out).unwrap();
    let image = &details["imageDetails"][0];
    assert_eq!(image["imageDigest"], pushed.as_str());
    assert_eq!(image["imageTags"], json!(["1"]));
    assert_eq!(image["platforms"], json!(["linux/amd64"]));
    assert!(image["imageSizeInBytes"].as_u64().unwrap() > 100_000);
    assert!(image["imagePushedAt"].as_f64().unwrap() > 1.7e9);

    // skopeo inspect reads it anonymously.
    let output = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected["Digest"], pushed.as_str());
    assert_eq!(inspected["Architecture"], "amd64");

    // ECR's verbs see it, and delete it.
    let (ok, out, _) = registry.orc(&[
        "ecr",
        "list-images",
        "--repository-name",
        "orc-test/registry-docker",
    ]);
    assert!(ok && out.contains(&pushed), "{out}");
    let (ok, _, err) = registry.orc(&[
        "ecr",
        "delete-repository",
        "--repository-name",
        "orc-test/registry-docker",
    ]);
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = registry.orc(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "orc-test/registry-docker",
        "--image-ids",
        "imageTag=1",
    ]);
    assert!(ok, "{err}");
    let answer = registry.http("GET", "/v2/orc-test/registry-docker/manifests/1", &[], b"");
    assert_eq!(answer.status, 404);
    let (ok, _, err) = registry.orc(&[
        "ecr",
        "delete-repository",
        "--repository-name",
        "orc-test/registry-docker",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = registry.orc(&["ecr", "describe-repositories"]);
    assert!(ok && !out.contains("registry-docker"), "{out}");
}

/// Writes an OCI image layout holding a two-platform index (amd64 and
/// arm64) built from local bytes; returns the index's digest.
fn write_oci_layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let mut entries = Vec::new();
    for (architecture, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        // A one-file tar layer, different per platform.
        let mut tar = vec![0u8; 512];
        let name = format!("hello-{architecture}");
        tar[..name.len()].copy_from_slice(name.as_bytes());
        let content = format!("hello from {architecture}\n");
        tar[100..108].copy_from_slice(b"0000644\0");
        tar[108..116].copy_from_slice(b"0000000\0");
        tar[116..124].copy_from_slice(b"0000000\0");
        tar[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
        tar[136..148].copy_from_slice(b"00000000000\0");
        tar[156] = b'0';
        tar[148..156].copy_from_slice(b"        ");
        let sum: u32 = tar.iter().map(|b| *b as u32).sum();
        tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut data = content.into_bytes();
        data.resize(512, 0);
        tar.extend_from_slice(&data);
        tar.extend_from_slice(&[0u8; 1024]);
        let (layer, layer_size) = put(&tar);
        let mut platform = json!({"architecture": architecture, "os": "linux"});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        let mut config = platform.clone();
        config["rootfs"] = json!({"type": "layers", "diff_ids": [layer]});
        config["config"] = json!({"Cmd": ["/hello"]});
        let (config, config_size) = put(config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
        });
        let (manifest, manifest_size) = put(manifest.to_string().as_bytes());
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "size": manifest_size,
            "platform": platform,
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let (index, index_size) = put(index.to_string().as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index,
            "size": index_size,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_a_two_platform_index_in_and_out_unchanged() {
    let registry = Registry::start().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("in");
    let index = write_oci_layout(&source);
    let creds = format!("AWS:{}", registry.password());
    let remote = format!("docker://{}/orc-test/multi:1", registry.host());

    let output = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
        ])
        .arg(format!("oci:{}:multi", source.display()))
        .arg(&remote)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy in: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &remote])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(digest(&output.stdout), index, "the index came back changed");

    let output = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &remote,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let arm: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(arm["Architecture"], "arm64");

    let out_dir = work.path().join("out");
    let output = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(&remote)
        .arg(format!("oci:{}:multi", out_dir.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy out: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let top: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("index.json")).unwrap())
            .unwrap();
    assert_eq!(top["manifests"][0]["digest"], index.as_str());
    for entry in std::fs::read_dir(source.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let copied = std::fs::read(out_dir.join("blobs/sha256").join(entry.file_name()))
            .expect("every blob came back");
        assert_eq!(copied, std::fs::read(entry.path()).unwrap());
    }

    let answer = registry.http("GET", "/v2/orc-test/multi/manifests/1", &[], b"");
    assert_eq!(answer.header("docker-content-digest"), Some(index.as_str()));
    let (ok, out, err) = registry.orc(&[
        "--output",
        "json",
        "ecr",
        "describe-images",
        "--repository-name",
        "orc-test/multi",
        "--image-ids",
        "imageTag=1",
    ]);
    assert!(ok, "{err}");
    let details: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        details["imageDetails"][0]["platforms"],
        json!(["linux/amd64", "linux/arm64/v8"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_strict_points_and_bad_input() {
    let registry = Registry::start().await;
    let auth = registry.authorization();
    let auth = auth.as_str();

    let answer = registry.http("GET", "/v2/", &[("Authorization", auth)], b"");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // A chunked, resumed upload: chunks must come in order, exactly once.
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let blob_digest = digest(&blob);
    let answer = registry.http(
        "POST",
        "/v2/spec/a/blobs/uploads/",
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    let location = answer.header("location").unwrap().to_string();
    let patch = |range: &str, bytes: &[u8]| {
        registry.http(
            "PATCH",
            &location,
            &[
                ("Authorization", auth),
                ("Content-Range", range),
                ("Content-Type", "application/octet-stream"),
            ],
            bytes,
        )
    };
    assert_eq!(patch("0-99999", &blob[..100_000]).status, 202);
    let repeated = patch("0-99999", &blob[..100_000]);
    assert_eq!(repeated.status, 416, "{repeated:?}");
    assert_eq!(repeated.header("range"), Some("0-99999"));
    assert_eq!(patch("200000-299999", &blob[200_000..]).status, 416);
    let status = registry.http("GET", &location, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some("0-99999"));
    assert_eq!(patch("100000-199999", &blob[100_000..200_000]).status, 202);
    let done = registry.http(
        "PUT",
        &format!("{location}?digest={blob_digest}"),
        &[("Authorization", auth), ("Content-Range", "200000-299999")],
        &blob[200_000..],
    );
    assert_eq!(done.status, 201, "{done:?}");
    assert_eq!(
        done.header("docker-content-digest"),
        Some(blob_digest.as_str())
    );
    let head = registry.http("HEAD", &format!("/v2/spec/a/blobs/{blob_digest}"), &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("300000"));
    let part = registry.http(
        "GET",
        &format!("/v2/spec/a/blobs/{blob_digest}"),
        &[("Range", "bytes=1000-1999")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &blob[1000..2000]);

    // Cross-repository mount.
    let mount = registry.http(
        "POST",
        &format!("/v2/spec/b/blobs/uploads/?mount={blob_digest}&from=spec/a"),
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(mount.status, 201, "{mount:?}");
    assert_eq!(
        registry
            .http("HEAD", &format!("/v2/spec/b/blobs/{blob_digest}"), &[], b"")
            .status,
        200
    );

    // Bytes that do not match their digest are refused and not stored.
    let claimed = digest(b"something else");
    let bad = registry.http(
        "POST",
        &format!("/v2/spec/a/blobs/uploads/?digest={claimed}"),
        &[("Authorization", auth)],
        b"these bytes",
    );
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (400, "DIGEST_INVALID"),
        "{bad:?}"
    );
    assert_eq!(
        registry
            .http("HEAD", &format!("/v2/spec/a/blobs/{claimed}"), &[], b"")
            .status,
        404
    );
    // A truncated upload stores nothing.
    let whole = vec![7u8; 10_000];
    let whole_digest = digest(&whole);
    let _ = registry.http_raw(
        "POST",
        &format!("/v2/spec/a/blobs/uploads/?digest={whole_digest}"),
        &[("Authorization", auth)],
        &whole[..5_000],
        Some(10_000),
    );
    assert_eq!(
        registry
            .http(
                "HEAD",
                &format!("/v2/spec/a/blobs/{whole_digest}"),
                &[],
                b""
            )
            .status,
        404
    );

    // Manifests: a missing blob, an invalid document, an oversized one.
    let config_bytes = br#"{"architecture":"amd64","os":"linux"}"#;
    let config = registry.push_blob(auth, "spec/a", config_bytes);
    let manifest = |layer: &str, size: usize| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
        })
        .to_string()
    };
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    let missing = registry.put_manifest(
        auth,
        "spec/a",
        "v0",
        OCI_MANIFEST,
        manifest(&whole_digest, 10_000).as_bytes(),
    );
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{missing:?}"
    );
    for invalid in [
        &b"{not json"[..],
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        b"[]",
    ] {
        let answer = registry.put_manifest(auth, "spec/a", "v0", OCI_MANIFEST, invalid);
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, "MANIFEST_INVALID"),
            "{answer:?}"
        );
    }
    // Refused from its Content-Length, before a byte of it is read.
    let answer = registry.http_raw(
        "PUT",
        "/v2/spec/a/manifests/v0",
        &[("Authorization", auth), ("Content-Type", OCI_MANIFEST)],
        b"",
        Some(5 * 1024 * 1024),
    );
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "SIZE_INVALID"),
        "{answer:?}"
    );
    assert_eq!(
        registry
            .http("GET", "/v2/spec/a/manifests/v0", &[], b"")
            .status,
        404
    );

    // Bad names.
    for name in ["spec/../a", "Spec/a", "spec//a"] {
        let answer = registry.http("GET", &format!("/v2/{name}/tags/list"), &[], b"");
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, "NAME_INVALID"),
            "{name}: {answer:?}"
        );
    }

    // Tags with n/last pagination and Link headers.
    let good = manifest(&blob_digest, 300_000);
    for tag in ["t3", "t1", "t4", "t2", "t0"] {
        let answer = registry.put_manifest(auth, "spec/a", tag, OCI_MANIFEST, good.as_bytes());
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(
            answer.header("docker-content-digest"),
            Some(digest(good.as_bytes()).as_str())
        );
    }
    let page = registry.http("GET", "/v2/spec/a/tags/list?n=2", &[], b"");
    assert_eq!(page.json()["tags"], json!(["t0", "t1"]));
    assert_eq!(
        page.header("link"),
        Some("</v2/spec/a/tags/list?n=2&last=t1>; rel=\"next\"")
    );
    let page = registry.http("GET", "/v2/spec/a/tags/list?n=2&last=t1", &[], b"");
    assert_eq!(page.json()["tags"], json!(["t2", "t3"]));
    let page = registry.http("GET", "/v2/spec/a/tags/list?n=2&last=t3", &[], b"");
    assert_eq!(page.json()["tags"], json!(["t4"]));
    assert_eq!(page.header("link"), None);
    let catalog = registry.http("GET", "/v2/_catalog", &[], b"");
    assert_eq!(catalog.json()["repositories"], json!(["spec/a", "spec/b"]));

    // The referrers API and OCI-Subject.
    let subject_digest = digest(good.as_bytes());
    let empty = registry.push_blob(auth, "spec/a", b"{}");
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob_digest, "size": 300_000}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": good.len()},
        "annotations": {"org.example": "yes"},
    })
    .to_string();
    let signature_digest = digest(signature.as_bytes());
    let answer = registry.put_manifest(
        auth,
        "spec/a",
        &signature_digest,
        OCI_MANIFEST,
        signature.as_bytes(),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.header("oci-subject"), Some(subject_digest.as_str()));
    let referrers = registry.http(
        "GET",
        &format!("/v2/spec/a/referrers/{subject_digest}"),
        &[],
        b"",
    );
    assert_eq!(referrers.status, 200);
    assert_eq!(
        referrers.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let index = referrers.json();
    assert_eq!(index["manifests"][0]["digest"], signature_digest.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.signature"
    );
    assert_eq!(index["manifests"][0]["annotations"]["org.example"], "yes");
    let filtered = registry.http(
        "GET",
        &format!("/v2/spec/a/referrers/{subject_digest}?artifactType=other"),
        &[],
        b"",
    );
    assert_eq!(filtered.json()["manifests"], json!([]));

    // Deletion: a tag, then a manifest; an unsupported deletion says so.
    let still_used = registry.http(
        "DELETE",
        &format!("/v2/spec/a/blobs/{blob_digest}"),
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(
        (still_used.status, still_used.code().as_str()),
        (405, "UNSUPPORTED"),
        "{still_used:?}"
    );
    let answer = registry.http(
        "DELETE",
        "/v2/spec/a/manifests/t0",
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(answer.status, 202);
    assert_eq!(
        registry
            .http("GET", "/v2/spec/a/manifests/t0", &[], b"")
            .code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        registry
            .http("GET", "/v2/spec/a/manifests/t1", &[], b"")
            .status,
        200
    );
    let answer = registry.http(
        "DELETE",
        &format!("/v2/spec/a/manifests/{subject_digest}"),
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(answer.status, 202);
    assert_eq!(
        registry
            .http("GET", "/v2/spec/a/manifests/t1", &[], b"")
            .status,
        404
    );
    let no_auth = registry.http(
        "DELETE",
        &format!("/v2/spec/a/manifests/{signature_digest}"),
        &[],
        b"",
    );
    assert_eq!(no_auth.status, 401);

    // Nothing half-written: no upload file is left, and only verified blobs exist.
    let uploads = registry.server.data_dir.join("registry/uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
    assert!(left.is_empty(), "uploads left behind: {left:?}");
    for name in [&claimed, &whole_digest] {
        assert!(!registry
            .server
            .data_dir
            .join("registry/blobs/sha256")
            .join(&name[7..9])
            .join(&name[7..])
            .exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_a_task_whose_image_lives_only_in_the_registry() {
    let orc = common::orc::TestOrc::start().await;
    let pushed = format!("{}/orc-test/only-here:1", orc.server.address);
    let _cleanup = DockerTags(vec![pushed.clone()]);
    images::busybox_image(&pushed);
    let config = tempfile::tempdir().unwrap();
    let (ok, password, err) = orc.cli(&["ecr", "get-login-password"]);
    assert!(ok, "{err}");
    let (ok, text) = docker_in(
        config.path(),
        &[
            "login",
            "--username",
            "AWS",
            "--password-stdin",
            &orc.server.address,
        ],
        Some(password.trim()),
    );
    assert!(ok, "{text}");
    let (ok, text) = docker_in(config.path(), &["push", &pushed], None);
    assert!(ok, "{text}");
    // Gone from the local Docker: only orc's registry has it now.
    let (ok, text) = docker_in(config.path(), &["rmi", &pushed], None);
    assert!(ok, "{text}");

    let definition = orc
        .register(json!({"family": "only-here", "containerDefinitions": [{
            "name": "app", "image": "orc.local/orc-test/only-here:1", "memory": 16,
            "command": ["sh", "-c", "echo pulled from orc; sleep 600"]
        }]}))
        .await;
    let id = orc.run_task(&definition).await;
    let task = orc.wait_task(&id, "RUNNING").await;
    assert_eq!(
        task["containers"][0]["image"],
        "orc.local/orc-test/only-here:1"
    );
    orc.call("StopTask", json!({"task": id})).await;
    orc.wait_task(&id, "STOPPED").await;
}

/// Pushes a one-layer image for `architecture` (with `variant`) as an OCI
/// manifest under `name:tag`; returns the manifest's bytes.
fn push_image_for(
    registry: &Registry,
    auth: &str,
    name: &str,
    tag: &str,
    architecture: &str,
    variant: &str,
) -> Vec<u8> {
    let config = json!({
        "architecture": architecture, "variant": variant, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}
    })
    .to_string();
    let config_digest = registry.push_blob(auth, name, config.as_bytes());
    let layer = format!("a layer for {architecture}").into_bytes();
    let layer_digest = registry.push_blob(auth, name, &layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let answer = registry.put_manifest(
        auth,
        name,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_with_no_variant_for_the_cluster_is_refused_before_placement() {
    let registry = Registry::start().await;
    let auth = registry.authorization();
    let host = registry.host().to_string();
    let _pi = common::state_size::FakeAgent::register_as(&host, 4096, 4096, "arm64").await;

    // An amd64-only image, named by the server's address.
    push_image_for(&registry, &auth, "orc-test/amd-only", "1", "amd64", "");
    let image = format!("{host}/orc-test/amd-only:1");
    let definition = json!({"family": "amd-only", "containerDefinitions": [
        {"name": "web", "image": image, "memory": 16}
    ]})
    .to_string();
    let (ok, _, err) = registry.orc(&["register-task-definition", "--cli-input-json", &definition]);
    assert!(ok, "{err}");
    let (ok, out, err) = registry.orc(&["run-task", "--task-definition", "amd-only"]);
    assert!(!ok, "an amd64-only image ran on an arm64 cluster: {out}");
    assert!(
        err.contains("linux/amd64"),
        "the refusal names the image's platform: {err}"
    );
    assert!(
        err.contains("arm64"),
        "the refusal names the instances' architecture: {err}"
    );
    assert!(err.contains(&image), "the refusal names the image: {err}");
    let (ok, _, err) = registry.orc(&[
        "create-service",
        "--service-name",
        "amd",
        "--task-definition",
        "amd-only",
        "--desired-count",
        "1",
    ]);
    assert!(!ok, "create-service accepted an image no instance can run");
    assert!(
        err.contains("linux/amd64") && err.contains("arm64"),
        "{err}"
    );
    let (ok, out, _) = registry.orc(&["--output", "json", "list-tasks"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listed["taskArns"],
        json!([]),
        "nothing was placed or left PROVISIONING"
    );

    // A two-platform index (amd64, arm/v7) under the short name: placed only
    // on the arm/v7 instance, and explain-task says why the arm64 one is not.
    let armv7 = common::state_size::FakeAgent::register_as(&host, 4096, 4096, "arm/v7").await;
    let amd = push_image_for(&registry, &auth, "orc-test/multi-arch", "amd", "amd64", "");
    let arm = push_image_for(&registry, &auth, "orc-test/multi-arch", "arm", "arm", "v7");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&amd), "size": amd.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&arm), "size": arm.len(),
             "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}
        ]
    })
    .to_string();
    let answer = registry.put_manifest(
        &auth,
        "orc-test/multi-arch",
        "1",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    let definition = json!({"family": "multi", "containerDefinitions": [
        {"name": "web", "image": "orc.local/orc-test/multi-arch:1", "memory": 16}
    ]})
    .to_string();
    let (ok, _, err) = registry.orc(&["register-task-definition", "--cli-input-json", &definition]);
    assert!(ok, "{err}");
    let (ok, out, err) = registry.orc(&[
        "--output",
        "json",
        "run-task",
        "--task-definition",
        "multi",
        "--count",
        "3",
    ]);
    assert!(ok, "{err}");
    let ran: Value = serde_json::from_str(&out).unwrap();
    let tasks = ran["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3, "{ran}");
    for task in tasks {
        assert!(
            task["containerInstanceArn"]
                .as_str()
                .unwrap()
                .ends_with(&armv7.instance_id),
            "a task was placed on an instance the image cannot run on: {task}"
        );
    }
    let task = tasks[0]["taskArn"].as_str().unwrap();
    let (ok, out, err) = registry.orc(&["--output", "json", "explain-task", task]);
    assert!(ok, "{err}");
    assert!(
        out.contains("architecture arm64 is not among the image's platforms"),
        "explain-task shows the platform mismatch: {out}"
    );
}

/// `orc` against the server at `address`.
fn orc_at(address: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(args)
        .env("ORC_ENDPOINT", address)
        .output()
        .expect("run orc");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The files under a server's blob store.
fn blob_files(data_dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let root = data_dir.join("registry/blobs/sha256");
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(blob.file_name().to_string_lossy().to_string());
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_to_one_server_is_pulled_from_another_after_it_stops() {
    let root = tempfile::tempdir().unwrap();
    let [mut first, second, third] = common::cluster::three_servers(root.path(), &[]).await;
    let config = tempfile::tempdir().unwrap();
    let pushed = format!("{}/orc-test/replicated:1", first.address);
    let from_second = format!("{}/orc-test/replicated:1", second.address);
    let from_third = format!("{}/orc-test/replicated:1", third.address);
    let _cleanup = DockerTags(vec![
        pushed.clone(),
        from_second.clone(),
        from_third.clone(),
    ]);
    images::busybox_image(&pushed);

    let (ok, password, err) = orc_at(&first.address, &["ecr", "get-login-password"]);
    assert!(ok, "{err}");
    // A TLS cluster's registry wants a credential for pulls too: Docker
    // keeps one login per host, so log in at every server.
    for server in [&first, &second, &third] {
        let (ok, text) = docker_in(
            config.path(),
            &[
                "login",
                "--username",
                "AWS",
                "--password-stdin",
                &server.address,
            ],
            Some(password.trim()),
        );
        assert!(ok, "{text}");
    }
    let (ok, text) = docker_in(config.path(), &["push", &pushed], None);
    assert!(ok, "{text}");

    // Acknowledged only once a majority holds every blob; the third server
    // copies them in the background.
    let on_first = blob_files(&first.data_dir);
    assert!(!on_first.is_empty());
    let held = [&second, &third]
        .iter()
        .filter(|s| blob_files(&s.data_dir) == on_first)
        .count();
    assert!(
        held >= 1,
        "the push was acknowledged before another server held its blobs"
    );
    common::cluster::eventually(
        Duration::from_secs(60),
        "every server holds the blobs",
        || async {
            (blob_files(&second.data_dir) == on_first && blob_files(&third.data_dir) == on_first)
                .then_some(())
        },
    )
    .await;

    // The server that took the push is gone; the others serve the image.
    first.kill();
    let (ok, text) = docker_in(config.path(), &["rmi", &pushed], None);
    assert!(ok, "{text}");
    let (ok, text) = docker_in(config.path(), &["pull", &from_second], None);
    assert!(ok, "pull from the second server: {text}");
    let (ok, text) = docker_in(config.path(), &["pull", &from_third], None);
    assert!(ok, "pull from the third server: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_push_shows_no_partial_blob_and_takes_the_push_again() {
    let mut registry = Registry::start().await;
    let auth = registry.authorization();
    let blob = vec![7u8; 300 * 1024];
    let blob_digest = digest(&blob);
    let started = registry.http(
        "POST",
        "/v2/orc-test/crash/blobs/uploads/",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(started.status, 202, "{started:?}");
    let location = started.header("location").unwrap().to_string();
    let half = &blob[..blob.len() / 2];
    let range = format!("0-{}", half.len() - 1);
    let patched = registry.http(
        "PATCH",
        &location,
        &[
            ("Authorization", &auth),
            ("Content-Range", &range),
            ("Content-Type", "application/octet-stream"),
        ],
        half,
    );
    assert_eq!(patched.status, 202, "{patched:?}");

    registry.server.kill();
    registry.server.restart();
    registry.server.wait_ready().await;
    let auth = registry.authorization();

    let status = registry.http("GET", &location, &[("Authorization", &auth)], b"");
    assert_eq!(
        status.status, 404,
        "the upload outlived the crash: {status:?}"
    );
    assert_eq!(status.code(), "BLOB_UPLOAD_UNKNOWN");
    let head = registry.http(
        "HEAD",
        &format!("/v2/orc-test/crash/blobs/{blob_digest}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(head.status, 404, "a partial blob is visible: {head:?}");
    let uploads = std::fs::read_dir(registry.server.data_dir.join("registry/uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "the half-written upload file is still on disk");
    assert!(blob_files(&registry.server.data_dir).is_empty());

    // The push, retried, goes through whole.
    assert_eq!(
        registry.push_blob(&auth, "orc-test/crash", &blob),
        blob_digest
    );
    let got = registry.http(
        "GET",
        &format!("/v2/orc-test/crash/blobs/{blob_digest}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(digest(&got.body), blob_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_what_no_image_references_and_spares_pushes_in_progress() {
    let registry = Registry::start().await;
    let auth = registry.authorization();
    push_image_for(&registry, &auth, "orc-test/gc", "1", "amd64", "");
    let orphan = registry.push_blob(&auth, "orc-test/gc", b"a layer whose manifest never came");
    assert_eq!(blob_files(&registry.server.data_dir).len(), 3);
    let gc = |args: &[&str]| -> Value {
        let mut full = vec!["--output", "json", "ecr", "gc"];
        full.extend_from_slice(args);
        let (ok, out, err) = registry.orc(&full);
        assert!(ok, "orc ecr gc {args:?}: {err}");
        serde_json::from_str(&out).unwrap()
    };

    // The orphan is as young as a push in progress: the default grace keeps it.
    let spared = gc(&[]);
    assert_eq!(spared["collectable"], json!([]), "{spared}");
    let chosen = gc(&["--grace-seconds", "0", "--dry-run"]);
    assert_eq!(
        chosen["collectable"],
        json!([{"repositoryName": "orc-test/gc", "digest": orphan}]),
        "only the unreferenced blob is chosen: {chosen}"
    );
    assert_eq!(
        blob_files(&registry.server.data_dir).len(),
        3,
        "a dry run removed something"
    );

    // Once the image is deleted its blobs go too; files after a minute's age.
    let (ok, _, err) = registry.orc(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "orc-test/gc",
        "--image-ids",
        "imageTag=1",
    ]);
    assert!(ok, "{err}");
    for file in blob_files(&registry.server.data_dir) {
        let path = registry
            .server
            .data_dir
            .join("registry/blobs/sha256")
            .join(&file[..2])
            .join(&file);
        let aged = Command::new("touch")
            .arg("-d")
            .arg("2 minutes ago")
            .arg(&path)
            .status()
            .unwrap();
        assert!(aged.success());
    }
    let collected = gc(&["--grace-seconds", "0"]);
    assert_eq!(collected["unlinkedBlobs"], 3, "{collected}");
    common::cluster::eventually(
        Duration::from_secs(60),
        "the unlinked files are deleted",
        || async {
            blob_files(&registry.server.data_dir)
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let head = registry.http(
        "HEAD",
        &format!("/v2/orc-test/gc/blobs/{orphan}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(head.status, 404);
    // The repository takes the same image again.
    push_image_for(&registry, &auth, "orc-test/gc", "1", "amd64", "");
    assert_eq!(blob_files(&registry.server.data_dir).len(), 2);
}

/// Debian's docker-registry (CNCF distribution) on a free loopback port,
/// stopped when dropped.
struct Upstream {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
    /// The TLS files, when it serves HTTPS.
    _keep: Option<tempfile::TempDir>,
}

impl Upstream {
    async fn start() -> Upstream {
        Upstream::start_with("").await
    }

    /// Serving HTTPS with a certificate for 127.0.0.1 signed by a CA made
    /// here; returns the CA's PEM file too.
    async fn start_tls() -> (Upstream, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        let paths = ["ca.pem", "server.pem", "server.key"].map(|name| dir.path().join(name));
        std::fs::write(&paths[0], ca.pem()).unwrap();
        std::fs::write(&paths[1], certificate.pem()).unwrap();
        std::fs::write(&paths[2], key.serialize_pem()).unwrap();
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            paths[1].display(),
            paths[2].display()
        );
        let mut upstream = Upstream::start_with(&tls).await;
        let ca_file = upstream._dir.path().join("ca.pem");
        std::fs::copy(&paths[0], &ca_file).unwrap();
        upstream._keep = Some(dir);
        (upstream, ca_file)
    }

    async fn start_with(tls: &str) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", common::cluster::free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{tls}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run docker-registry: install it with `apt-get install docker-registry` (.ci/run does)");
        let upstream = Upstream {
            child,
            address,
            _dir: dir,
            _keep: None,
        };
        common::cluster::eventually(
            Duration::from_secs(30),
            "docker-registry answers",
            || async { TcpStream::connect(&upstream.address).ok().map(|_| ()) },
        )
        .await;
        upstream
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_cache_rule_fetches_from_the_upstream_once() {
    let mut upstream = Upstream::start().await;
    let registry = Registry::start().await;
    let at_upstream = format!("{}/orc-test/upstream:1", upstream.address);
    let through_orc = format!("{}/mirror/orc-test/upstream:1", registry.host());
    let _cleanup = DockerTags(vec![at_upstream.clone(), through_orc.clone()]);
    images::busybox_image(&at_upstream);
    let (ok, text) = registry.docker(&["push", &at_upstream], None);
    assert!(ok, "push to the upstream: {text}");
    let (ok, text) = registry.docker(&["rmi", &at_upstream], None);
    assert!(ok, "{text}");

    let (ok, _, err) = registry.orc(&[
        "ecr",
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "mirror",
        "--upstream-registry-url",
        "ftp://elsewhere",
    ]);
    assert!(!ok);
    assert!(err.contains("upstreamRegistryUrl"), "{err}");
    let url = format!("http://{}", upstream.address);
    let (ok, _, err) = registry.orc(&[
        "ecr",
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "mirror",
        "--upstream-registry-url",
        &url,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = registry.orc(&[
        "--output",
        "json",
        "ecr",
        "describe-pull-through-cache-rules",
    ]);
    assert!(ok, "{err}");
    let rules: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rules["pullThroughCacheRules"][0]["upstreamRegistryUrl"],
        url.as_str()
    );

    // The first pull fetches from the upstream; then the upstream is gone,
    // and the cluster still serves the image.
    let (ok, text) = registry.docker(&["pull", &through_orc], None);
    assert!(ok, "pull through the cache: {text}");
    upstream.child.kill().unwrap();
    upstream.child.wait().unwrap();
    let (ok, text) = registry.docker(&["rmi", &through_orc], None);
    assert!(ok, "{text}");
    let (ok, text) = registry.docker(&["pull", &through_orc], None);
    assert!(ok, "pull from the cache with the upstream gone: {text}");
    let (ok, out, err) = registry.orc(&[
        "--output",
        "json",
        "ecr",
        "describe-images",
        "--repository-name",
        "mirror/orc-test/upstream",
    ]);
    assert!(ok, "{err}");
    let images: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        images["imageDetails"][0]["imageTags"],
        json!(["1"]),
        "{images}"
    );
    // A tag not cached while the upstream is down: the answer says why.
    let missing = registry.http("GET", "/v2/mirror/orc-test/upstream/manifests/2", &[], b"");
    assert_eq!(missing.status, 503, "{missing:?}");
    let body = String::from_utf8_lossy(&missing.body).to_string();
    assert!(
        body.contains("pull-through cache could not fetch"),
        "{body}"
    );
}

/// Creates a user with `role` and an access key; returns (id, secret).
fn access_key(registry: &Registry, name: &str, role: &str) -> (String, String) {
    let (ok, _, err) = registry.orc(&["iam", "create-user", name, "--role", role]);
    assert!(ok, "{err}");
    let (ok, out, err) = registry.orc(&["iam", "create-access-key", "--user-name", name]);
    assert!(ok, "{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    (
        key["AccessKey"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string(),
        key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_in_with_an_access_key_and_the_role_decides_pushes() {
    let registry = Registry::start().await;
    let (operator, operator_secret) = access_key(&registry, "olga", "operator");
    let (readonly, readonly_secret) = access_key(&registry, "rita", "readonly");

    // The token endpoint takes an access key as Basic credentials: an
    // operator's token pushes, a readonly user's only pulls, a wrong
    // secret gets none.
    let upload = |authorization: &str| {
        registry
            .http(
                "POST",
                "/v2/orc-test/keyed/blobs/uploads/",
                &[("Authorization", authorization)],
                b"",
            )
            .status
    };
    let token = |user: &str, secret: &str| {
        let answer = registry.http(
            "GET",
            "/v2/token?service=orc&scope=repository:orc-test/keyed:pull,push",
            &[("Authorization", &basic(user, secret))],
            b"",
        );
        (
            answer.status,
            answer.json()["token"].as_str().map(str::to_string),
        )
    };
    let (status, operator_token) = token(&operator, &operator_secret);
    assert_eq!(status, 200);
    assert_eq!(upload(&format!("Bearer {}", operator_token.unwrap())), 202);
    assert_eq!(upload(&basic(&operator, &operator_secret)), 202);
    let (status, readonly_token) = token(&readonly, &readonly_secret);
    assert_eq!(status, 200);
    assert_eq!(upload(&format!("Bearer {}", readonly_token.unwrap())), 401);
    let refused = registry.http(
        "POST",
        "/v2/orc-test/keyed/blobs/uploads/",
        &[("Authorization", &basic(&readonly, &readonly_secret))],
        b"",
    );
    assert_eq!(refused.status, 401);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("readonly"),
        "{refused:?}"
    );
    assert_eq!(
        registry
            .http(
                "GET",
                "/v2/",
                &[("Authorization", &basic(&readonly, &readonly_secret))],
                b""
            )
            .status,
        200
    );
    assert_eq!(token(&operator, "not-the-secret").0, 401);
    assert_eq!(upload(&basic(&operator, "not-the-secret")), 401);
    assert_eq!(token("AKIAUNKNOWNUNKNOWN00", "x").0, 401);

    // docker login with the operator's key, then push and pull.
    let reference = format!("{}/orc-test/keyed:1", registry.host());
    let _cleanup = DockerTags(vec![reference.clone()]);
    images::busybox_image(&reference);
    let (ok, text) = registry.docker(
        &[
            "login",
            "--username",
            &operator,
            "--password-stdin",
            registry.host(),
        ],
        Some(&operator_secret),
    );
    assert!(ok, "docker login failed: {text}");
    let (ok, text) = registry.docker(&["push", &reference], None);
    assert!(ok, "docker push with an access key failed: {text}");
    // The readonly key logs in but cannot push.
    let (ok, text) = registry.docker(
        &[
            "login",
            "--username",
            &readonly,
            "--password-stdin",
            registry.host(),
        ],
        Some(&readonly_secret),
    );
    assert!(ok, "docker login failed: {text}");
    let (ok, text) = registry.docker(&["push", &reference], None);
    assert!(!ok, "a readonly key pushed: {text}");
    let (ok, text) = registry.docker(&["rmi", &reference], None);
    assert!(ok, "{text}");
    let (ok, text) = registry.docker(&["pull", &reference], None);
    assert!(ok, "a readonly key cannot pull: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_cache_rule_reaches_an_https_upstream_it_trusts() {
    let (upstream, ca_file) = Upstream::start_tls().await;
    // The server trusts the upstream's CA as it would a public one: through
    // the system's trust store, which SSL_CERT_FILE replaces (this test's
    // process, and the server it starts, only).
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let registry = Registry::start().await;
    let at_upstream = format!("{}/orc-test/secure-upstream:1", upstream.address);
    let through_orc = format!("{}/secure/orc-test/secure-upstream:1", registry.host());
    let _cleanup = DockerTags(vec![at_upstream.clone(), through_orc.clone()]);
    images::busybox_image(&at_upstream);
    // Docker reaches a loopback registry over HTTPS without verifying it.
    let (ok, text) = registry.docker(&["push", &at_upstream], None);
    assert!(ok, "push to the HTTPS upstream: {text}");
    let url = format!("https://{}", upstream.address);
    let (ok, _, err) = registry.orc(&[
        "ecr",
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "secure",
        "--upstream-registry-url",
        &url,
    ]);
    assert!(ok, "{err}");
    let (ok, text) = registry.docker(&["pull", &through_orc], None);
    assert!(ok, "pull through the cache from the HTTPS upstream: {text}");
}
