//! Just enough of a W3C WebDriver client to drive Debian's `chromium` through
//! `chromedriver`, over the `reqwest` the tests already use (no browser-automation crate).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one wait for a condition in the page may take.
pub const WAIT: Duration = Duration::from_secs(15);

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

const MISSING: &str = "the browser tests need the Debian packages `chromium` and \
     `chromium-driver`: run `apt-get install -y chromium chromium-driver` (scripts/test \
     installs them when run as root), or point CONCORD_CHROMIUM and CONCORD_CHROMEDRIVER \
     at other binaries";

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ])
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A headless chromium session, on pages of the server at `base`.
pub struct Browser {
    pub base: String,
    http: reqwest::Client,
    driver_url: String,
    session: Option<String>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on an ephemeral port and opens a headless chromium session.
    pub async fn launch(base: &str) -> Browser {
        let chromium = find_program("CONCORD_CHROMIUM", &["chromium", "chromium-browser"])
            .unwrap_or_else(|| panic!("{MISSING} (chromium was not found)"));
        let chromedriver = find_program("CONCORD_CHROMEDRIVER", &["chromedriver"])
            .unwrap_or_else(|| panic!("{MISSING} (chromedriver was not found)"));
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{MISSING} ({} did not start: {e})", chromedriver.display())
            });
        let stdout = driver.stdout.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Reads the port chromedriver announces, then keeps draining its output so that it
        // never blocks or dies on a full or closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = port_tx.send(rest.trim().trim_end_matches('.').parse::<u16>().ok());
                }
            }
        });
        let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(WAIT))
            .await
            .unwrap()
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("chromedriver did not announce its port in time"));
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            driver_url: format!("http://127.0.0.1:{port}"),
            session: None,
            driver,
            _profile: profile,
        };
        let profile_arg = format!("--user-data-dir={}", browser._profile.path().display());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900", profile_arg,
                ],
            },
        }}});
        let answer = browser
            .raw(reqwest::Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start chromium: {e}\n{MISSING}"));
        browser.session = Some(answer["sessionId"].as_str().unwrap().to_owned());
        browser
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.driver_url);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if ok {
            Ok(value["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                value["value"]["error"], value["value"]["message"]
            ))
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let session = self.session.as_deref().unwrap();
        self.raw(method, &format!("/session/{session}{path}"), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path} failed: {e}"))
    }

    /// Opens `path` (e.g. `/#/streams`) of the server.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
        self.wait_for(
            "the UI to start",
            "return window.concordReady === true",
            vec![],
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns a truthy value, and returns that value; fails the
    /// test after [`WAIT`] naming `what` and showing the page.
    pub async fn wait_for(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.exec(script, args.clone()).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self
                    .exec(
                        "return document.body ? document.body.innerText : ''",
                        vec![],
                    )
                    .await;
                panic!(
                    "timed out waiting for {what} (last value {value}); script errors: {:?}; page text:\n{}",
                    self.script_errors().await,
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the element `css` exists and its text contains every one of `needles`.
    pub async fn wait_text(&self, css: &str, needles: &[&str]) -> String {
        self.wait_for(
            &format!("{css} to show {needles:?}"),
            "const e = document.querySelector(arguments[0]);
             if (!e) { return null; }
             const t = e.innerText;
             return arguments[1].every((n) => t.includes(n)) ? t : null;",
            vec![json!(css), json!(needles)],
        )
        .await
        .as_str()
        .unwrap()
        .to_owned()
    }

    /// The text of `css` (waiting for it to exist).
    pub async fn text(&self, css: &str) -> String {
        self.wait_text(css, &[]).await
    }

    async fn element(&self, css: &str) -> String {
        self.wait_for(
            &format!("{css} to be present and enabled"),
            "const e = document.querySelector(arguments[0]); return !!e && !e.disabled;",
            vec![json!(css)],
        )
        .await;
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
            .to_owned()
    }

    /// Clicks `css` as a user would (waiting for it to be present and enabled).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Replaces the content of the input `css` by typing `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Picks `value` in the `<select>` `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.element(css).await;
        self.exec(
            "const e = document.querySelector(arguments[0]);
             e.value = arguments[1];
             e.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!(css), json!(value)],
        )
        .await;
    }

    /// The cells' text of each row of the table body `css`.
    pub async fn rows(&self, css: &str) -> Vec<Vec<String>> {
        let rows = self
            .exec(
                "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))
                   .map((r) => Array.from(r.cells).map((c) => c.innerText.trim()));",
                vec![json!(css)],
            )
            .await;
        serde_json::from_value(rows).unwrap()
    }

    /// What the page's error hook recorded (script errors, rejections, console errors,
    /// CSP violations).
    pub async fn script_errors(&self) -> Vec<String> {
        let value = self
            .exec(
                "return window.concordErrors || ['the page did not load its error hook'];",
                vec![],
            )
            .await;
        serde_json::from_value(value).unwrap_or_default()
    }

    /// Fails the test if the page recorded any script problem.
    pub async fn assert_no_script_errors(&self, page: &str) {
        let errors = self.script_errors().await;
        assert!(
            errors.is_empty(),
            "JavaScript errors on the {page} page: {errors:?}"
        );
    }

    /// The current tab.
    pub async fn tab(&self) -> String {
        self.call(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Opens a new tab and switches to it.
    pub async fn new_tab(&self) -> String {
        let handle = self
            .call(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({"type": "tab"})),
            )
            .await["handle"]
            .as_str()
            .unwrap()
            .to_owned();
        self.switch_to(&handle).await;
        handle
    }

    pub async fn switch_to(&self, handle: &str) {
        self.call(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    /// Saves a PNG of the whole page as `<dir>/<name>.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let height = self
            .exec(
                // The window is taller than the page's viewport by the browser's frame.
                "return Math.ceil(document.documentElement.scrollHeight
                        + window.outerHeight - window.innerHeight);",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(700, 1500);
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 1280, "height": height})),
        )
        .await;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64_decode(png.as_str().unwrap());
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .unwrap();
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 1280, "height": 900})),
        )
        .await;
        path
    }

    /// Ends the session (chromium exits) and stops chromedriver.
    pub async fn quit(mut self) {
        if let Some(session) = self.session.take() {
            let _ = self
                .raw(
                    reqwest::Method::DELETE,
                    &format!("/session/{session}"),
                    None,
                )
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed never reached `quit`: end the session without a runtime, so
        // that chromium does not outlive the test.
        if let Some(session) = self.session.take() {
            let addr = self.driver_url.trim_start_matches("http://").to_owned();
            if let Ok(mut socket) = std::net::TcpStream::connect(&addr) {
                let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    socket,
                    "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut socket, &mut sink);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
