//! The web UI of `cairn serve`: its embedded files over plain HTTP (content
//! types, the Content-Security-Policy, nothing served outside the embedded
//! set, the token rule), and the page itself driven in a real headless
//! Chromium through chromedriver (W3C WebDriver over HTTP, with ureq): boot
//! a run, patch it, meet the optimistic-lock conflict, walk its history,
//! watch the ledger update live with events the CLI commits from another
//! process, propose, search, review and promote memory, take a milestone,
//! snapshot and load a resume pack. Every step the page claims is checked
//! against the store through the API.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`
//! (`/usr/bin/chromium`, `/usr/bin/chromedriver`; `CAIRN_CHROMIUM` and
//! `CAIRN_CHROMEDRIVER` name others); `.ci/run` installs them. Where they are
//! absent the browser test says so and returns. Screenshots go to
//! `<target>/web-ui-screenshots/`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::cli::{cairn, Env, NOW};
use serde_json::{json, Value};

/// A running `cairn serve`, stopped on drop.
struct Server {
    child: Child,
    port: u16,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Server {
    /// Starts `cairn serve --addr 127.0.0.1:0 ARGS` over `env`'s store
    /// (`extra_env` set on the process) and reads the port it prints.
    fn start(env: &Env, args: &[&str], extra_env: &[(&str, &str)]) -> Server {
        let mut cmd = cairn(env.home.path());
        cmd.env("CAIRN_NOW", NOW)
            .current_dir(env.home.path())
            .arg("--store")
            .arg(env.root())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("cairn serve did not start: {line:?} {err}")
            });
        Server {
            child,
            port,
            agent: agent(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET without a token: (status, headers, body text).
    fn fetch(&self, path: &str, headers: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap, String) {
        let mut r = self.agent.get(self.url(path));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut resp = r.call().unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, h, text)
    }

    /// GET a `/v1` route; asserts success and returns `data`.
    fn data(&self, path: &str) -> Value {
        let (status, _, text) = self.fetch(path, &[]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 200, "{path}: {v}");
        v["data"].clone()
    }

    /// Sends one raw request line (no client-side path normalization);
    /// returns the status code.
    fn raw_status(&self, request_line: &str) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{request_line}\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"))
    }
}

#[test]
fn the_embedded_files_are_served_with_their_types_and_a_csp() {
    let env = Env::store();
    let s = Server::start(&env, &[], &[]);
    for (path, ctype, needle) in [
        ("/", "text/html; charset=utf-8", "<title>cairn</title>"),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "new EventSource(",
        ),
        ("/ui/app.css", "text/css; charset=utf-8", ":focus-visible"),
        ("/ui/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, h, body) = s.fetch(path, &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(h["content-type"], ctype, "{path}");
        assert!(body.contains(needle), "{path} lacks {needle:?}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        // A revalidation with the entity tag is answered 304, without a body.
        let tag = h["etag"].to_str().unwrap().to_string();
        let (status, _, body) = s.fetch(path, &[("If-None-Match", &tag)]);
        assert_eq!(status, 304, "{path}");
        assert!(body.is_empty());
    }
    // The page names no other origin: no CDN, no network beyond this server.
    let (_, _, html) = s.fetch("/", &[]);
    let (_, _, js) = s.fetch("/ui/app.js", &[]);
    for text in [&html, &js] {
        assert!(!text.contains("http://") && !text.contains("https://"));
    }
    // Nothing outside the embedded set, however the path is spelled.
    for line in [
        "GET /ui/ HTTP/1.1",
        "GET /ui/nope.js HTTP/1.1",
        "GET /ui/../Cargo.toml HTTP/1.1",
        "GET /ui/..%2f..%2fCargo.toml HTTP/1.1",
        "GET /ui/%2e%2e/%2e%2e/cairn.yaml HTTP/1.1",
        "GET /../../../../etc/passwd HTTP/1.1",
        "GET /cairn.yaml HTTP/1.1",
        "GET /index.html HTTP/1.1",
    ] {
        assert_eq!(s.raw_status(line), 404, "{line}");
    }
    assert_eq!(s.raw_status("POST / HTTP/1.1\r\nContent-Length: 0"), 405);
    let (status, _, body) = s.fetch("/ui/nope.js", &[]);
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "NOT_FOUND");
}

#[test]
fn with_a_token_the_page_loads_but_the_api_still_needs_it() {
    let env = Env::store();
    let s = Server::start(&env, &[], &[("CAIRN_TOKEN", "ui-s3cret")]);
    for path in ["/", "/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
        assert_eq!(s.fetch(path, &[]).0, 200, "{path}");
    }
    // The API and the event stream do not answer without the token.
    for path in ["/v1/runs", "/v1/events", "/v1/ledger", "/ui/nope.js"] {
        assert_eq!(s.fetch(path, &[]).0, 401, "{path}");
    }
    let (status, _, _) = s.fetch("/v1/runs", &[("Authorization", "Bearer ui-s3cret")]);
    assert_eq!(status, 200);
    // A write to the page's route is not a way around the token.
    let before = env.state();
    let resp = s
        .agent
        .post(s.url("/"))
        .send_json(json!({"objective": "x"}))
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(env.state(), before);
}

// ---- a small W3C WebDriver client over ureq ----------------------------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the page gets for each thing it must show.
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver with one headless Chromium session; both stop on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    shots: PathBuf,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    p.is_file().then_some(p)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or None (with
    /// the reason printed) when either is not installed.
    fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (
            tool("CAIRN_CHROMIUM", "/usr/bin/chromium"),
            tool("CAIRN_CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            eprintln!(
                "SKIPPED: the browser test needs Chromium and chromedriver \
                 (Debian: apt-get install chromium chromium-driver; .ci/run installs them), \
                 or CAIRN_CHROMIUM and CAIRN_CHROMEDRIVER naming them"
            );
            return None;
        };
        // Port 0: chromedriver picks a free one and says which on stdout.
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(driver.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Reads every line (so the pipe never fills), reporting the port.
            for line in out.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(WAIT)
            .ok()
            .flatten()
            .expect("chromedriver did not say its port");
        let base = format!("http://127.0.0.1:{port}");
        let agent = agent();
        let profile = tempfile::TempDir::new().unwrap();
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("web-ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            shots,
            profile,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = b
                .agent
                .get(format!("{}/status", b.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1366,900",
            format!("--user-data-dir={}", b.profile.path().display()),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        Some(b)
    }

    /// One WebDriver command; returns its `value`, panicking on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.body_mut().read_json().unwrap();
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), None);
    }

    /// Clears a field, then types into it as a user would.
    fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/clear")), None);
        if text.is_empty() {
            return;
        }
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// Types keys into a field without clearing it (e.g. "\u{E007}", Enter).
    fn keys(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        );
    }

    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The text of the first element matching `css`, "" when there is none
    /// or it is hidden.
    fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]);
             return e && e.getClientRects().length > 0 ? e.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits until `css`'s text contains `needle`; returns the text.
    fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css);
            if t.contains(needle) {
                return t;
            }
            if Instant::now() > deadline {
                self.shot("failure");
                panic!("{css} never showed {needle:?}; it shows {t:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the element with id `id` has the focus.
    fn wait_focus(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let focused = self.js("return document.activeElement.id", json!([]));
            if focused == json!(id) {
                return;
            }
            if Instant::now() > deadline {
                self.shot("failure");
                panic!("#{id} never took the focus; {focused} has it");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a screenshot as `<target>/web-ui-screenshots/NAME.png`.
    fn shot(&self, name: &str) -> PathBuf {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Runs `cairn ws patch RUN --file -` in its own process.
fn cli_patch(env: &Env, run: &str, patch: Value) -> Value {
    let (code, out) = env.json_stdin(
        &["ws", "patch", run, "--file", "-"],
        Some(patch.to_string().as_bytes()),
    );
    assert_eq!(code, 0, "{out}");
    out["data"].clone()
}

#[test]
fn the_ui_in_headless_chromium() {
    let started = Instant::now();
    let Some(b) = Browser::start() else { return };
    let env = Env::store();
    let s = Server::start(&env, &[], &[]);
    b.goto(&s.url("/"));
    b.wait_text("#live", "live");

    // Every form control has a label, every action is a button or a link.
    let unlabelled = b.js(
        "return [...document.querySelectorAll('input, select, textarea')]
           .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
           .map(e => e.id);",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]), "controls without a label");
    let clickable_divs = b.js(
        "return document.querySelectorAll('div[onclick], span[onclick], [role=button]').length;",
        json!([]),
    );
    assert_eq!(clickable_divs, json!(0));

    // Boot a run from the form.
    b.fill("#boot-objective", "Ship the web UI");
    b.fill("#boot-criteria", "a browser drives it\nscreenshots exist");
    b.click("#boot-submit");
    b.wait_text("#ws-view", "Ship the web UI");
    let run = b.text("#run-id");
    assert!(run.starts_with("run_"), "{run}");
    let ws = s.data(&format!("/v1/runs/{run}/ws"));
    assert_eq!(ws["_update_seq"], 0);
    assert_eq!(
        ws["acceptance_criteria"],
        json!(["a browser drives it", "screenshots exist"])
    );

    // Patch it: seq 0 -> 1.
    b.fill("#patch-next", "write the browser test");
    b.fill("#patch-note", "patched from the browser");
    b.click("#patch-submit");
    b.wait_text("#patch-result", "now seq 1");
    let ws = s.data(&format!("/v1/runs/{run}/ws"));
    assert_eq!(ws["_update_seq"], 1);
    assert_eq!(ws["next_action"], "write the browser test");
    assert_eq!(
        ws["sliding_context"][0]["content"],
        "patched from the browser"
    );

    // The CLI, in another process, moves the run to seq 2: the page sees it
    // live (the slider's end and the working set follow the event stream).
    cli_patch(
        &env,
        &run,
        json!({"expected_seq": 1, "set": {"current_stage": "CLI-STAGE"}}),
    );
    b.wait_text("#ws-max", "2");
    b.wait_text("#ws-view", "CLI-STAGE");

    // A patch still written against seq 1 is refused: the conflict is shown
    // and nothing is written.
    assert_eq!(
        b.js(
            "return document.getElementById('patch-expected').value",
            json!([])
        ),
        json!("1")
    );
    let before = env.state();
    b.fill("#patch-next", "a stale edit");
    b.click("#patch-submit");
    let conflict = b.wait_text("#patch-conflict", "STALE_SEQ");
    assert!(
        conflict.contains("against seq 1") && conflict.contains("now at seq 2"),
        "{conflict}"
    );
    assert!(conflict.contains("Nothing was written"), "{conflict}");
    b.shot("conflict");
    assert_eq!(env.state(), before, "a refused patch changed the store");
    // Re-apply on the new seq: the edit lands as seq 3.
    b.click("#conflict-rebase");
    b.click("#patch-submit");
    b.wait_text("#patch-result", "now seq 3");
    let ws = s.data(&format!("/v1/runs/{run}/ws"));
    assert_eq!(ws["next_action"], "a stale edit");
    assert_eq!(ws["current_stage"], "CLI-STAGE");

    // History: back two steps shows the state at seq 1.
    b.click("#ws-prev");
    b.click("#ws-prev");
    let at1 = b.wait_text("#ws-view", "Working set at seq 1");
    assert!(at1.contains("write the browser test"), "{at1}");
    assert!(!at1.contains("CLI-STAGE"), "{at1}");
    b.wait_text("#ws-at", "1");
    b.shot("history");
    b.click("#ws-latest");
    b.wait_text("#ws-view", "Working set (latest)");

    // Propose a memory from the run page.
    b.fill("#pr-content", "The cairn web UI is embedded in the binary");
    b.fill("#pr-tags", "ui browser");
    b.click("#pr-submit");
    let proposed = b.wait_text("#pr-result", "Proposed batch");
    let mem = proposed
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("mem_"))
        .unwrap_or_else(|| panic!("no memory id in {proposed:?}"))
        .to_string();
    assert_eq!(s.data(&format!("/v1/memory/{mem}"))["status"], "candidate");

    // Milestone with episodes listed.
    b.fill("#ms-reason", "UI milestone");
    b.fill("#ms-batches", "");
    b.click("#ms-submit");
    b.wait_text("#episodes-table", "UI milestone");
    b.shot("run");

    // The ledger view holds every event so far, and takes new ones live,
    // including one the CLI commits from another process. A view change
    // moves the focus to the view's heading.
    b.click("nav a[data-view=ledger]");
    b.wait_focus("h-ledger");
    b.wait_text("#ledger-table", "MILESTONE_CREATED");
    let seq = s.data(&format!("/v1/runs/{run}/ws"))["_update_seq"].clone();
    let cli = cli_patch(
        &env,
        &run,
        json!({"expected_seq": seq, "set": {"next_action": "from the CLI, live"}}),
    );
    let commit = cli["event"]["commit"].as_str().unwrap().to_string();
    let row = format!("#ledger-table tr[data-commit='{commit}']");
    let shown = b.wait_text(&row, "WS_UPDATE_APPLIED");
    let seq = cli["seq"].as_u64().unwrap();
    assert!(
        shown.contains(&run) && shown.contains(&format!("seq {seq}")),
        "{shown}"
    );
    let live: u64 = b.text("#live-count").trim().parse().unwrap();
    assert!(live >= 1, "live events: {live}");
    b.shot("ledger");

    // Search memory with a filter (status: candidate), submitted from the keyboard.
    b.click("nav a[data-view=memory]");
    b.js(
        "document.getElementById('s-status').value = 'candidate';",
        json!([]),
    );
    b.fill("#s-q", "embedded binary");
    b.keys("#s-q", "\u{E007}");
    let hits = b.wait_text("#search-table", &mem);
    assert!(hits.contains("candidate"), "{hits}");
    b.wait_text("#search-meta", "1 hit");
    b.shot("search");

    // The review queue: a rejection without a reason is refused in the page
    // and writes nothing; the promotion lands.
    b.click("nav a[data-view=review]");
    b.wait_text("#review-list", "The cairn web UI is embedded");
    let before = env.state();
    b.click(&format!("li[data-id='{mem}'] button[value=reject]"));
    b.wait_text("#review-result", "needs a reason");
    assert_eq!(env.state(), before);
    b.fill(
        &format!("li[data-id='{mem}'] input"),
        "checked in the browser",
    );
    b.shot("review");
    b.click(&format!("li[data-id='{mem}'] button[value=promote]"));
    b.wait_text("#review-result", "Promoted");
    assert_eq!(s.data(&format!("/v1/memory/{mem}"))["status"], "active");
    b.wait_text("#review-empty", "empty");

    // Projects and trusted state.
    b.click("nav a[data-view=projects]");
    b.fill("#pj-id", "webui");
    b.click("#project-form button[type=submit]");
    b.wait_text("#projects-table", "webui");
    b.click("#projects-table button");
    b.fill("#st-category", "build");
    b.fill("#st-key", "ui");
    b.fill("#st-value", "embedded");
    b.click("#st-submit");
    b.wait_text("#state-table", "embedded");
    let st = s.data("/v1/projects/webui/state");
    assert_eq!(st["entries"][0]["value"], "embedded");

    // Resume: snapshot the run, load the pack as a new run.
    b.click("nav a[data-view=resume]");
    b.wait_text("#sn-run", &run);
    b.js(
        "document.getElementById('sn-run').value = arguments[0];",
        json!([run]),
    );
    b.click("#sn-submit");
    b.wait_text("#sn-result", "Pack ");
    b.fill("#ld-new", "run_from_pack");
    b.click("#ld-submit");
    b.wait_text("#ld-result", "run_from_pack");
    let ws = s.data("/v1/runs/run_from_pack/ws");
    assert_eq!(ws["objective"], "Ship the web UI");

    // Back to the run for the picture in the README.
    b.goto(&s.url(&format!("/#run/{run}")));
    b.wait_text("#ws-view", "from the CLI, live");
    let shot = b.shot("run-latest");
    eprintln!(
        "screenshots in {} ({:.1} s)",
        shot.parent().unwrap().display(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn with_a_token_the_page_asks_for_it_and_streams_the_ledger_with_it() {
    let Some(b) = Browser::start() else { return };
    let env = Env::store();
    let run = env.boot();
    let s = Server::start(&env, &[], &[("CAIRN_TOKEN", "ui-s3cret")]);
    b.goto(&s.url("/#ledger"));
    // The API answers 401: the page asks for the token, with the focus on it.
    b.wait_text("#auth", "needs a bearer token");
    b.wait_focus("auth-token");
    // A wrong token is refused and asked for again.
    b.fill("#auth-token", "wrong");
    b.keys("#auth-token", "\u{E007}");
    b.wait_text("#notice", "token was refused");
    b.wait_text("#auth", "needs a bearer token");
    b.fill("#auth-token", "ui-s3cret");
    b.keys("#auth-token", "\u{E007}");
    b.wait_text("#ledger-table", "RUN_BOOTED");
    b.wait_text("#live", "live");
    // The event stream (read with fetch, which sends the header) delivers a
    // commit the CLI makes in another process.
    let out = cli_patch(
        &env,
        &run,
        json!({"expected_seq": 0, "set": {"next_action": "with a token"}}),
    );
    let commit = out["event"]["commit"].as_str().unwrap().to_string();
    b.wait_text(
        &format!("#ledger-table tr[data-commit='{commit}']"),
        "WS_UPDATE_APPLIED",
    );
    // The token is kept in the tab's session storage, never in the URL.
    assert!(!b
        .js("return location.href", json!([]))
        .as_str()
        .unwrap()
        .contains("s3cret"));
    b.shot("token");
}
