//! A small W3C WebDriver client over the crate's plain HTTP helper, driving
//! Debian's Chromium through chromedriver. Just what the kiosk and console
//! tests need: open a page, find elements, type, click, read text, take a
//! screenshot.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{free_port, http_request};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and one headless Chromium session; both end when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium at `width`×`height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver (apt-get install chromium-driver): {e}"));
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--lang=zh-CN",
                        // As a kiosk's browser is started: its tones sound
                        // without a first touch.
                        "--autoplay-policy=no-user-gesture-required",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        // A browser slow to start under a full suite's load can outlast one
        // request's read timeout: ask again (the driver is this browser's
        // own, and goes with it).
        let mut tries = 0;
        let v = loop {
            tries += 1;
            match b.try_call("POST", "/session", &caps) {
                Ok(v) => break v,
                Err(e) if tries < 3 => eprintln!("webdriver session, try {tries}: {e}"),
                Err(e) => panic!("{e}"),
            }
        };
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        // The window holds more than the page: grow it so that the page's
        // viewport is `width`×`height`, as on a kiosk's screen.
        let inner = b.execute("return [innerWidth, innerHeight]");
        let (iw, ih) = (
            inner[0].as_i64().unwrap_or(0),
            inner[1].as_i64().unwrap_or(0),
        );
        let (w, h) = (i64::from(width), i64::from(height));
        if (iw, ih) != (w, h) && iw > 0 && ih > 0 {
            b.call(
                "POST",
                &b.s("/window/rect"),
                &json!({ "width": 2 * w - iw, "height": 2 * h - ih }),
            );
        }
        b
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_call(method, path, body).unwrap()
    }

    fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let body = if method == "GET" || method == "DELETE" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, text) = http_request(self.addr, method, path, &[], &body)
            .map_err(|e| format!("webdriver {path}: {e}"))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("webdriver {path}: {e}: {text}"))?;
        if status >= 300 {
            return Err(format!(
                "webdriver {method} {path}: {status} {}",
                v["value"]["message"]
            ));
        }
        Ok(v["value"].clone())
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens a URL.
    pub fn open(&self, url: &str) {
        self.call("POST", &self.s("/url"), &json!({ "url": url }));
    }

    /// All elements matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.call(
            "POST",
            &self.s("/elements"),
            &json!({ "using": "css selector", "value": css }),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting up to `within` for it.
    pub fn find(&self, css: &str, within: Duration) -> Element {
        let end = Instant::now() + within;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            assert!(Instant::now() < end, "no element `{css}` within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types into an element, as a keyboard (or a badge reader) would.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{}/value", e.0)),
            &json!({ "text": text }),
        );
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) {
        self.call(
            "POST",
            &self.s(&format!("/element/{}/click", e.0)),
            &json!({}),
        );
    }

    /// Clicks the first element matching `css`, looking it up again if
    /// the page replaced it in between (a live table re-rendered).
    pub fn click_live(&self, css: &str, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let e = self.find(css, within);
            match self.try_call(
                "POST",
                &self.s(&format!("/element/{}/click", e.0)),
                &json!({}),
            ) {
                Ok(_) => return,
                // Replaced, or not shown yet (an overlay about to open).
                Err(err)
                    if (err.contains("stale element") || err.contains("not interactable"))
                        && Instant::now() < end =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Under a sticky header: brought to the middle, tried again.
                Err(err) if err.contains("click intercepted") && Instant::now() < end => {
                    self.execute(&format!(
                        "document.querySelector({}).scrollIntoView({{block: 'center'}})",
                        json!(css)
                    ));
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => panic!("{err}"),
            }
        }
    }

    /// An element's visible text.
    pub fn text(&self, e: &Element) -> String {
        self.call(
            "GET",
            &self.s(&format!("/element/{}/text", e.0)),
            &Value::Null,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// An attribute of the first element matching `css`, read in the page
    /// in one step once one matches: a page that re-renders the element
    /// between a find and a read cannot leave a stale reference.
    pub fn attribute_of(&self, css: &str, name: &str, wait: Duration) -> Option<String> {
        self.find(css, wait);
        let script = format!(
            "const e = document.querySelector({}); return e ? e.getAttribute({}) : null;",
            serde_json::to_string(css).unwrap_or_default(),
            serde_json::to_string(name).unwrap_or_default()
        );
        self.execute(&script).as_str().map(str::to_owned)
    }

    /// An element's attribute.
    pub fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.s(&format!("/element/{}/attribute/{name}", e.0)),
            &Value::Null,
        )
        .as_str()
        .map(str::to_owned)
    }

    /// Waits until the text of the first element matching `css` satisfies
    /// `pred`; returns it. Elements the page replaces meanwhile (live
    /// updates) are looked up again.
    pub fn wait_text(
        &self,
        css: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_read(css, within, what, "text", pred)
    }

    /// As [`Browser::wait_text`], for an attribute.
    pub fn wait_attribute(
        &self,
        css: &str,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_read(css, within, what, &format!("attribute/{name}"), pred)
    }

    fn wait_read(
        &self,
        css: &str,
        within: Duration,
        what: &str,
        read: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let end = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < end {
            if let Some(e) = self.find_all(css).into_iter().next()
                && let Ok(v) = self.try_call(
                    "GET",
                    &self.s(&format!("/element/{}/{read}", e.0)),
                    &Value::Null,
                )
            {
                last = v.as_str().unwrap_or_default().to_owned();
                if pred(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("`{css}` never showed {what}; last: {last:?}");
    }

    /// Runs a script in the page; returns its value.
    pub fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            &json!({ "script": script, "args": [] }),
        )
    }

    /// The page printed to PDF by Chromium (its print view: `@media
    /// print`), on A4.
    pub fn print_pdf(&self) -> Vec<u8> {
        let v = self.call(
            "POST",
            &self.s("/print"),
            &json!({ "page": { "width": 21.0, "height": 29.7 }, "background": false }),
        );
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("print: {e}"))
    }

    /// A PNG screenshot of the page, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let v = self.call("GET", &self.s("/screenshot"), &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http_request(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
