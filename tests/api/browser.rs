//! The pairing component, on the hosted page and on a page of another origin, in a real
//! browser: Debian's headless Chromium, driven over WebDriver by chromedriver through
//! thirtyfour. axe-core checks every state; each is saved as a screenshot under
//! target/screenshots/.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use thirtyfour::Key;
use thirtyfour::prelude::*;

use crate::e2e::Sandbox;
use crate::helpers::*;

struct Browser {
    /// Taken when the browser is dropped.
    driver: Option<WebDriver>,
    chromedriver: Child,
    /// The browser's own profile directory: it names its processes.
    profile: std::path::PathBuf,
}

/// Ends the browser with its driver, however the test ends: killing chromedriver alone leaves
/// Chromium running.
impl Drop for Browser {
    fn drop(&mut self) {
        // its processes are ended below; a session left to thirtyfour's own drop would be
        // closed by a blocking request to a driver about to go
        if let Some(driver) = self.driver.take() {
            let _ = driver.leak();
        }
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.as_os_str())
            .status();
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
        // Chromium's processes write into the profile as they exit: removed before they are
        // gone, it comes back
        for _ in 0..100 {
            let running = Command::new("pgrep")
                .arg("-f")
                .arg(self.profile.as_os_str())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test installs Debian's chromium-driver)");
        let profile =
            std::env::temp_dir().join(format!("facepair-chromium-{}", uuid::Uuid::new_v4()));
        // dropped at once if the driver does not start, so that it ends chromedriver
        let mut browser = Browser {
            driver: None,
            chromedriver,
            profile,
        };
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{base}/status")).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary("/usr/bin/chromium").unwrap();
        for arg in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=520,680",
            &format!("--user-data-dir={}", browser.profile.display()),
        ] {
            caps.add_arg(arg).unwrap();
        }
        browser.driver = Some(WebDriver::new(base, caps).await.expect("a session"));
        browser
    }

    fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("a session")
    }

    async fn open(&self, url: &str) {
        self.driver().goto(url).await.unwrap();
    }

    async fn run(&self, script: &str) -> Value {
        let ret = self.driver().execute(script, Vec::new()).await;
        ret.unwrap_or_else(|e| panic!("`{script}`: {e}"))
            .json()
            .clone()
    }

    async fn url(&self) -> String {
        self.driver().current_url().await.unwrap().to_string()
    }

    /// Waits until `script` returns `want`.
    async fn until(&self, script: &str, want: Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut last = Value::Null;
        while tokio::time::Instant::now() < deadline {
            last = self.run(script).await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`{script}` stayed {last}, wanted {want}");
    }

    /// Sends keys to whatever has the focus, as a person at a keyboard would.
    async fn keys(&self, keys: impl Into<thirtyfour::common::keys::TypingData>) {
        self.driver()
            .action_chain()
            .send_keys(keys)
            .perform()
            .await
            .unwrap();
    }

    /// Runs axe-core (WCAG 2.x A and AA rules, 2.2 included) on the page, shadow roots
    /// included, and fails on any serious or critical violation.
    async fn axe(&self, state: &str) {
        let source = std::fs::read_to_string(axe_path()).unwrap_or_else(|e| {
            panic!(
                "axe-core is missing at {} ({e}): scripts/test installs it from npm",
                axe_path().display()
            )
        });
        // colours are measured once a fading outcome is fully opaque
        self.until(SETTLED, json!(true)).await;
        if self.run("return typeof window.axe").await != json!("object") {
            self.run(&source).await;
        }
        let found = self
            .driver()
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] } })
                  .then((r) => done(r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => JSON.stringify(n.target)).join(', ')}`)))
                  .catch((e) => done([`axe failed: ${e}`]));"#,
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(found.json(), &json!([]), "axe-core in state {state}");
    }

    async fn screenshot(&self, name: &str) {
        self.until(SETTLED, json!(true)).await;
        let bytes = self.driver().screenshot_as_png().await.unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}.png"));
        std::fs::write(&file, bytes).unwrap();
        eprintln!("screenshot: {}", file.display());
    }
}

/// No animation is running, in the page or in a component's shadow root.
const SETTLED: &str = "return [document, ...[...document.querySelectorAll('facepair-pairing')].map((e) => e.shadowRoot)].every((d) => d.getAnimations().every((a) => a.playState === 'finished'))";

/// axe-core's browser build, installed from npm by scripts/test.
fn axe_path() -> std::path::PathBuf {
    std::env::var_os("FACEPAIR_AXE_CORE")
        .map(Into::into)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            std::path::Path::new(&home)
                .join(".cache/facepair/axe-core@4.14.1/node_modules/axe-core/axe.min.js")
        })
}

/// A script run with `r`, the first component's shadow root (null while there is none).
fn shadow(body: &str) -> String {
    format!(
        "const r = document.querySelector('facepair-pairing')?.shadowRoot; if (!r) return null; {body}"
    )
}

fn code_text() -> String {
    shadow("return r.querySelector('.code').textContent")
}

fn headline() -> String {
    shadow("return r.querySelector('.outcome').hidden ? '' : r.querySelector('h3').textContent")
}

fn part(name: &str) -> String {
    shadow(&format!(
        "const e = r.querySelector('[part~=\"{name}\"]'); return e && !e.hidden && e.offsetParent !== null ? e.textContent : null"
    ))
}

/// The message `key` in `language`, from the catalogs the module is built from.
fn message(language: &str, key: &str) -> String {
    let path = format!(
        "{}/src/http/sdk/messages/{language}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let catalog: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    catalog[key].as_str().unwrap().to_owned()
}

async fn click_part(browser: &Browser, name: &str) {
    let host = browser
        .driver()
        .find(By::Css("facepair-pairing"))
        .await
        .unwrap();
    let root = host.get_shadow_root().await.unwrap();
    root.find(By::Css(format!("[part~=\"{name}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The phone succeeds; the open page says so without loading itself again.
async fn approved_without_reload(browser: &Browser, sb: &Sandbox, code: &str) {
    browser.run("window.__sameDocument = true").await;
    assert_eq!(sb.phone(code, "SUCCESS", None).await.status(), 200);
    browser.until(&headline(), json!("Face confirmed")).await;
    assert_eq!(
        browser.run("return window.__sameDocument === true").await,
        json!(true),
        "no reload"
    );
}

#[sqlx::test]
async fn the_page_follows_a_login_to_success_without_reloading(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.platform_name = Some("Acme Desktop".into()),
    )
    .await;
    let login = sb.app.login().await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let browser = Browser::start().await;
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser.until(&code_text(), json!(code)).await;
    assert_eq!(
        browser
            .run("return [document.documentElement.lang, document.documentElement.dir, document.title]")
            .await,
        json!(["en", "ltr", "Sign in with your face"])
    );
    // read digit by digit by screen readers; the grouped digits themselves are hidden from them
    let spoken = code.chars().map(String::from).collect::<Vec<_>>().join(" ");
    assert_eq!(
        browser
            .run(&shadow("return [r.querySelector('.sr-only').textContent, r.querySelector('.code').getAttribute('aria-hidden')]"))
            .await,
        json!([format!("Code: {spoken}"), "true"])
    );
    // selected, the grouped code is one string
    assert_eq!(
        browser
            .run(&shadow("const range = document.createRange(); range.selectNodeContents(r.querySelector('.code')); return range.toString()"))
            .await,
        json!(code)
    );
    browser
        .until(
            &shadow("return /works for \\d+:\\d\\d more/.test(r.querySelector('.countdown').textContent)"),
            json!(true),
        )
        .await;
    assert_eq!(
        browser.run(&part("platform")).await,
        json!("Signing in to Acme Desktop")
    );
    let warning = browser
        .run(&shadow("return r.querySelector('.notice').textContent"))
        .await;
    let warning = warning.as_str().unwrap();
    assert!(
        warning.contains("only into the iDenfy app")
            && warning.contains("on this computer yourself"),
        "{warning}"
    );
    assert_eq!(
        browser
            .run(&shadow("const s = r.querySelector('[role=status]'); return [s.getAttribute('aria-live'), s.textContent]"))
            .await,
        json!(["polite", "Waiting for your selfie in the iDenfy app."])
    );
    assert_eq!(
        browser.run(&part("cancel-button")).await,
        json!("Cancel sign-in")
    );
    browser.axe("pending").await;
    browser.screenshot("pairing-pending").await;

    // copying: the whole code, with feedback
    let cdp = browser.driver().cdp();
    cdp.send_raw(
        "Browser.grantPermissions",
        json!({ "origin": sb.app.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"] }),
    )
    .await
    .unwrap();
    click_part(&browser, "copy-button").await;
    browser
        .until(
            &shadow("return r.querySelector('[role=status]').textContent"),
            json!("Code copied."),
        )
        .await;
    let copied = browser
        .driver()
        .execute_async(
            "const done = arguments[arguments.length - 1]; navigator.clipboard.readText().then(done, (e) => done(String(e)))",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(copied.json(), &json!(code));

    approved_without_reload(&browser, &sb, code).await;
    browser.axe("approved").await;
    browser.screenshot("pairing-approved").await;
}

#[sqlx::test]
async fn a_failure_is_explained_and_a_new_code_can_be_had(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let browser = Browser::start().await;
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser.until(&code_text(), json!(code)).await;

    sb.phone(code, "FAILED", Some("FACE_MISMATCH")).await;
    browser.until(&headline(), json!("That did not work")).await;
    let detail = browser.run(&part("detail")).await;
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("did not match the person on record"),
        "{detail}"
    );
    assert_eq!(
        browser.run(&part("new-code-button")).await,
        json!("Get a new code")
    );
    browser.axe("failed").await;
    browser.screenshot("pairing-failed").await;

    click_part(&browser, "new-code-button").await;
    browser.until(&headline(), json!("")).await;
    let state = sb.app.state(login["login_id"].as_str().unwrap()).await;
    assert_eq!(state["attempt"]["number"], 2);
    let new_code = state["attempt"]["digit_string"].as_str().unwrap();
    browser.until(&code_text(), json!(new_code)).await;
    browser.screenshot("pairing-new-code").await;
}

#[sqlx::test]
async fn an_expired_code_says_so(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    // the browser starts before the code's lifetime begins: under load a start takes seconds
    let browser = Browser::start().await;
    let login: Value = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "lifetime_seconds": 10 }))
        .await;
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser
        .until(
            &code_text(),
            json!(login["attempt"]["digit_string"].as_str().unwrap()),
        )
        .await;
    browser.run("window.__sameDocument = true").await;
    browser.until(&headline(), json!("The code expired")).await;
    assert_eq!(
        browser.run("return window.__sameDocument === true").await,
        json!(true),
        "no reload"
    );
    assert_eq!(
        browser.run(&part("new-code-button")).await,
        json!("Get a new code")
    );
    // the icon is drawn, not a glyph a font may lack
    assert_eq!(
        browser
            .run(&shadow("const box = r.querySelector('.outcome > span'); return [box.textContent, box.querySelectorAll('svg path').length, box.querySelector('svg').getBoundingClientRect().width]"))
            .await,
        json!(["", 1, 32])
    );
    browser.axe("expired").await;
    browser.screenshot("pairing-expired").await;
}

#[sqlx::test]
async fn the_page_is_locked_down(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .http
        .get(app.url("/pair/fpw_anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("style-src 'self'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let page = response.text().await.unwrap();
    let module = app
        .http
        .get(app.url("/sdk/v1/facepair-pairing.js"))
        .send()
        .await
        .unwrap();
    let integrity = module.headers()["x-facepair-integrity"].to_str().unwrap();
    let version = module.headers()["etag"].to_str().unwrap().trim_matches('"');
    assert!(
        page.contains(&format!(
            "<script type=\"module\" src=\"/sdk/v1/facepair-pairing.js?v={version}\" integrity=\"{integrity}\">"
        )),
        "the page loads the one component, pinned: {page}"
    );
    assert!(
        !page.contains("<style") && !page.contains(" style="),
        "no inline style"
    );
    let framed = TestApp::spawn_with(app.pool.clone(), |s| {
        s.frame_ancestors = vec!["https://platform.example".into()]
    })
    .await;
    let response = framed
        .http
        .get(framed.url("/pair/fpw_anything"))
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.ends_with("frame-ancestors https://platform.example"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("&quot;parent_origins&quot;:[&quot;https://platform.example&quot;]"),
        "config reaches the page"
    );
}

/// On approval the page goes to the configured return URL with the platform's `state`, never
/// the login id.
#[sqlx::test]
async fn approval_returns_to_the_platform(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.return_url = Some("http://127.0.0.1:9/platform/done".parse().unwrap()),
    )
    .await;
    let login = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "state": "session 7/a&b" }))
        .await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let browser = Browser::start().await;
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser.until(&code_text(), json!(code)).await;
    sb.phone(code, "SUCCESS", None).await;
    let want = "http://127.0.0.1:9/platform/done?state=session+7%2Fa%26b";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let url = browser.url().await;
        if url == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page went to {url}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Framed by an allowed origin, the page tells the embedding page about the approval with
/// postMessage (to that origin only).
#[sqlx::test]
async fn an_embedding_page_hears_of_the_approval(pool: PgPool) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let platform = MockServer::start().await;
    let origin = platform.uri();
    let allowed = origin.clone();
    let sb = Sandbox::start_with(pool, |_| {}, move |s| s.frame_ancestors = vec![allowed]).await;
    let login = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "state": "csrf-7Hq2" }))
        .await;
    let parent = format!(
        r#"<!doctype html><title>waiting</title>
        <iframe id="pairing" src="{}" width="480" height="640"></iframe>
        <script>
          addEventListener('message', (e) => {{
            if (e.data && e.data.type === 'facepair:approved') document.title = 'approved ' + e.data.state + ' ' + JSON.stringify(Object.keys(e.data).sort()) + ' from ' + e.origin;
          }});
        </script>"#,
        login["watch_url"].as_str().unwrap()
    );
    Mock::given(method("GET"))
        .and(path("/login"))
        .respond_with(
            // set_body_string would label it text/plain
            ResponseTemplate::new(200).set_body_raw(parent, "text/html"),
        )
        .mount(&platform)
        .await;
    let browser = Browser::start().await;
    browser.open(&format!("{origin}/login")).await;
    // the frame holds facepair's page, on facepair's origin
    browser
        .until(
            "const f = document.getElementById('pairing'); return f.contentDocument === null ? 'cross-origin' : 'same-origin'",
            json!("cross-origin"),
        )
        .await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    // wait until the framed page is following the login (it opened its event stream)
    sb.app
        .eventually(Duration::from_secs(15), || async {
            sb.app.metric("facepair_sse_streams_open").await == 1.0
        })
        .await;
    sb.phone(code, "SUCCESS", None).await;
    let facepair_origin = sb.app.base.clone();
    browser
        .until(
            "return document.title",
            json!(format!(
                r#"approved csrf-7Hq2 ["network_match","state","type"] from {facepair_origin}"#
            )),
        )
        .await;
    browser.screenshot("pairing-embedded-approved").await;
}

/// Where no stream gets through (a proxy or a firewall that drops them), the page gives the
/// stream up and long-polls, and still follows the login to its end without a reload.
#[sqlx::test]
async fn without_a_stream_the_page_long_polls(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let browser = Browser::start().await;
    // Chromium's DevTools protocol, through chromedriver: every request for a stream fails
    let cdp = browser.driver().cdp();
    cdp.network().enable().await.unwrap();
    cdp.send_raw("Network.setBlockedURLs", json!({ "urls": ["*/events"] }))
        .await
        .unwrap();
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser.until(&code_text(), json!(code)).await;
    const LONG_POLLED: &str =
        "return performance.getEntriesByType('resource').some(e => e.name.endsWith('?wait=25'))";
    browser.until(LONG_POLLED, json!(true)).await;
    approved_without_reload(&browser, &sb, code).await;
    let streams = browser
        .run("return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/events') && e.responseStatus === 200).length")
        .await;
    assert_eq!(streams, json!(0), "a stream got through after all");
}

const EVENTS: &str = "return JSON.stringify(window.__events || [])";

/// The component on a platform's own page, of another origin, under a CSP that allows no
/// inline style: loaded with its integrity hash, styled through custom properties and
/// `::part`, used by keyboard alone, and telling the page each outcome by DOM events.
#[sqlx::test]
async fn the_component_works_on_a_page_of_another_origin_by_keyboard(pool: PgPool) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let sb = Sandbox::start(pool).await;
    let facepair = sb.app.base.clone();
    let platform = MockServer::start().await;
    let login = sb
        .app
        .login_with(
            json!({ "scan_ref": SCAN_REF, "state": "csrf-7Hq2", "client_ip": "198.51.100.7" }),
        )
        .await;
    let integrity = sb
        .app
        .http
        .get(sb.app.url("/sdk/v1/facepair-pairing.js"))
        .send()
        .await
        .unwrap()
        .headers()["x-facepair-integrity"]
        .to_str()
        .unwrap()
        .to_owned();
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme</title>
        <link rel="stylesheet" href="/platform.css">
        <script type="module" src="{facepair}/sdk/v1/facepair-pairing.js" integrity="{integrity}" crossorigin="anonymous"></script>
        <script src="/platform.js"></script></head>
        <body><main><h1>Acme Desktop</h1>
        <facepair-pairing watch-url="{}" platform-name="Acme Desktop" desktop-place="Vilnius, Lithuania"></facepair-pairing>
        </main></body></html>"#,
        login["watch_url"].as_str().unwrap()
    );
    let csp = format!(
        "default-src 'none'; script-src 'self' {facepair}; style-src 'self'; connect-src {facepair}"
    );
    for (at, body, kind) in [
        ("/login", page, "text/html"),
        (
            "/platform.css",
            "facepair-pairing { --facepair-accent: rgb(91, 33, 182); } facepair-pairing::part(title) { text-transform: uppercase; }".to_owned(),
            "text/css",
        ),
        (
            "/platform.js",
            "window.__events = []; for (const name of ['facepair:approved', 'facepair:failed', 'facepair:expired', 'facepair:canceled']) document.addEventListener(name, (e) => window.__events.push([name, e.detail]));".to_owned(),
            "text/javascript",
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(at))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(body, kind)
                    .insert_header("content-security-policy", csp.as_str()),
            )
            .mount(&platform)
            .await;
    }
    let browser = Browser::start().await;
    browser.open(&format!("{}/login", platform.uri())).await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    browser.until(&code_text(), json!(code)).await;
    // the platform's styles reach in through custom properties and parts; the component's own
    // constructed sheet applies under style-src 'self'
    assert_eq!(
        browser
            .run(&shadow("return [getComputedStyle(r.querySelector('[part~=copy-button]')).color, getComputedStyle(r.querySelector('h2')).textTransform, getComputedStyle(r.querySelector('.card')).borderTopLeftRadius]"))
            .await,
        json!(["rgb(91, 33, 182)", "uppercase", "14px"])
    );
    assert_eq!(
        browser.run(&part("platform")).await,
        json!("Signing in to Acme Desktop")
    );
    let place = browser
        .run(&shadow("return r.querySelector('.notice').textContent"))
        .await;
    assert!(
        place
            .as_str()
            .unwrap()
            .contains("started from Vilnius, Lithuania"),
        "{place}"
    );
    browser.axe("embedded pending").await;
    browser.screenshot("component-embedded-pending").await;

    // by keyboard: Tab reaches the copy button, with a visible focus ring
    let focused = shadow(
        "const a = r.activeElement; return document.activeElement === r.host && a ? [a.getAttribute('part'), getComputedStyle(a).outlineStyle] : null",
    );
    browser.keys(Key::Tab).await;
    browser
        .until(&focused, json!(["button copy-button", "solid"]))
        .await;

    sb.phone(code, "FAILED", Some("EYES_CLOSED")).await;
    browser.until(&headline(), json!("That did not work")).await;
    browser
        .until(
            EVENTS,
            json!(serde_json::to_string(&json!([["facepair:failed", {
                "fail_reason": "EYES_CLOSED", "canceled_in_app": false, "can_request_new_code": true, "final": false
            }]])).unwrap()),
        )
        .await;
    browser.axe("embedded failed").await;
    // the outcome took the focus (it was inside the component); Tab goes on to "Get a new code"
    browser
        .until(
            &shadow("return r.activeElement && r.activeElement.tagName"),
            json!("H3"),
        )
        .await;
    browser.keys(Key::Tab).await;
    browser
        .until(&focused, json!(["button new-code-button", "solid"]))
        .await;
    browser.keys(Key::Enter).await;
    let id = login["login_id"].as_str().unwrap();
    sb.app
        .eventually(Duration::from_secs(15), || async {
            sb.app.state(id).await["attempt"]["number"] == 2
        })
        .await;
    let new_code = sb.app.state(id).await["attempt"]["digit_string"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.until(&code_text(), json!(new_code)).await;
    browser
        .until(&focused, json!(["button copy-button", "solid"]))
        .await;

    sb.phone(&new_code, "SUCCESS", None).await;
    browser.until(&headline(), json!("Face confirmed")).await;
    let events: Value = serde_json::from_str(browser.run(EVENTS).await.as_str().unwrap()).unwrap();
    assert_eq!(
        events[1],
        json!(["facepair:approved", { "state": "csrf-7Hq2", "network_match": "different" }])
    );
    assert_eq!(
        events.as_array().unwrap().len(),
        2,
        "each outcome told once: {events}"
    );
    let everything = browser
        .run(&shadow("return document.documentElement.outerHTML + r.innerHTML + JSON.stringify(window.__events) + performance.getEntriesByType('resource').map((e) => e.name).join(' ')"))
        .await;
    assert!(
        !everything.as_str().unwrap().contains(id),
        "the login id never reaches the page"
    );
    browser.axe("embedded approved").await;
    browser.screenshot("component-embedded-approved").await;
}

/// Each language's page: `<html lang>` and `dir`, the component's words, Arabic right to left
/// with the code still left to right.
#[sqlx::test]
async fn each_language_is_spoken_and_arabic_reads_right_to_left(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let browser = Browser::start().await;
    for language in facepair::domain::locale::PAGE_LANGUAGES {
        let login = sb
            .app
            .login_with(json!({ "scan_ref": SCAN_REF, "locale": language }))
            .await;
        browser.open(login["watch_url"].as_str().unwrap()).await;
        let code = login["attempt"]["digit_string"].as_str().unwrap();
        browser.until(&code_text(), json!(code)).await;
        let dir = if language == "ar" { "rtl" } else { "ltr" };
        assert_eq!(
            browser
                .run(&shadow("const c = r.querySelector('.card'); return [document.documentElement.lang, document.documentElement.dir, document.title, c.lang, getComputedStyle(c).direction, getComputedStyle(r.querySelector('.code')).direction]"))
                .await,
            json!([language, dir, message(language, "title"), language, dir, "ltr"]),
            "{language}"
        );
        assert_eq!(
            browser.run(&part("title")).await,
            json!(message(language, "title"))
        );
        assert_eq!(
            browser.run(&part("cancel-button")).await,
            json!(message(language, "cancel"))
        );
        if language == "ar" {
            // right to left: the steps are indented from the right, where their numbers stand
            let sides = browser
                .run(&shadow("const ol = r.querySelector('ol').getBoundingClientRect(); const li = r.querySelector('li').getBoundingClientRect(); return [ol.right - li.right > 10, li.left - ol.left < 1]"))
                .await;
            assert_eq!(sides, json!([true, true]));
            browser.axe("arabic").await;
        }
        browser
            .screenshot(&format!("pairing-lang-{language}"))
            .await;
    }
}

/// At 320 CSS pixels, and with text at 200% there, nothing needs a sideways scroll; the
/// person can cancel; the simulated phone fits a 390-pixel screen.
#[sqlx::test]
async fn the_page_holds_at_320_pixels_and_200_percent_text(pool: PgPool) {
    let sb = Sandbox::start_with(
        pool,
        |_| {},
        |s| s.platform_name = Some("Acme Desktop".into()),
    )
    .await;
    let login = sb
        .app
        .login_with(
            json!({ "scan_ref": SCAN_REF, "locale": "de", "desktop_place": "Vilnius, Litauen" }),
        )
        .await;
    let browser = Browser::start().await;
    let cdp = browser.driver().cdp();
    let width =
        |w: u32| json!({ "width": w, "height": 700, "deviceScaleFactor": 1, "mobile": true });
    cdp.send_raw("Emulation.setDeviceMetricsOverride", width(320))
        .await
        .unwrap();
    browser.open(login["watch_url"].as_str().unwrap()).await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    browser.until(&code_text(), json!(code)).await;
    const FITS: &str = "const r = document.querySelector('facepair-pairing').shadowRoot; const w = document.documentElement.clientWidth; const over = [...r.querySelectorAll('*')].filter((e) => e.getClientRects().length && (e.getBoundingClientRect().right > w + 0.5 || e.getBoundingClientRect().left < -0.5)).map((e) => e.className || e.tagName); return [w, document.documentElement.scrollWidth <= w, over]";
    // the login's own place, from the watch document
    let notice = browser
        .run(&shadow("return r.querySelector('.notice').textContent"))
        .await;
    assert!(
        notice
            .as_str()
            .unwrap()
            .contains("Diese Anmeldung wurde von Vilnius, Litauen aus begonnen."),
        "{notice}"
    );
    assert_eq!(browser.run(FITS).await, json!([320, true, []]));
    browser.axe("320 px").await;
    browser.screenshot("pairing-320px").await;
    browser
        .run("document.documentElement.style.fontSize = '200%'")
        .await;
    assert_eq!(browser.run(FITS).await, json!([320, true, []]));
    browser.screenshot("pairing-320px-200-percent-text").await;

    click_part(&browser, "cancel-button").await;
    browser
        .until(&headline(), json!(message("de", "canceled_title")))
        .await;
    assert_eq!(
        sb.app.state(login["login_id"].as_str().unwrap()).await["status"],
        "canceled"
    );
    browser.axe("canceled").await;
    browser.screenshot("pairing-canceled").await;

    cdp.send_raw("Emulation.setDeviceMetricsOverride", width(390))
        .await
        .unwrap();
    browser.open(&format!("{}/_sim/app", sb.sim_url)).await;
    assert_eq!(
        browser
            .run("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
            .await,
        json!([390, 390])
    );
    // the canceled login's code: the phone does not call it a success
    let input = browser.driver().find(By::Id("code")).await.unwrap();
    input.send_keys(code).await.unwrap();
    browser
        .driver()
        .find(By::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until(
            "return document.getElementById('result').textContent.startsWith('Not used: the sign-in on the computer had already ended')",
            json!(true),
        )
        .await;
    browser.screenshot("simulated-phone-390px").await;
}

/// Given another login's `watch-url`, the element follows that login alone, by long-polling
/// where no stream gets through: a poll still waiting for the first login does not hold up the
/// second, and the first's outcome no longer shows.
#[sqlx::test]
async fn a_new_watch_url_is_followed_instead_of_the_old(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let first = sb.app.login().await;
    let second = sb
        .app
        .login_with(json!({ "scan_ref": SCAN_REF, "state": "second" }))
        .await;
    let browser = Browser::start().await;
    let cdp = browser.driver().cdp();
    cdp.network().enable().await.unwrap();
    cdp.send_raw("Network.setBlockedURLs", json!({ "urls": ["*/events"] }))
        .await
        .unwrap();
    browser.open(first["watch_url"].as_str().unwrap()).await;
    let code = |login: &Value| {
        login["attempt"]["digit_string"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    browser.until(&code_text(), json!(code(&first))).await;
    const LONG_POLLED: &str =
        "return performance.getEntriesByType('resource').some(e => e.name.endsWith('?wait=25'))";
    browser.until(LONG_POLLED, json!(true)).await;
    browser
        .run(&format!(
            "window.__events = []; const e = document.querySelector('facepair-pairing'); e.addEventListener('facepair:approved', (ev) => window.__events.push(ev.detail.state)); e.setAttribute('watch-url', '{}')",
            second["watch_url"].as_str().unwrap()
        ))
        .await;
    browser.until(&code_text(), json!(code(&second))).await;
    sb.phone(&code(&first), "FAILED", None).await;
    sb.wait_for(first["login_id"].as_str().unwrap(), "failed")
        .await;
    sb.phone(&code(&second), "SUCCESS", None).await;
    browser.until(&headline(), json!("Face confirmed")).await;
    assert_eq!(
        browser.run("return window.__events").await,
        json!(["second"])
    );
}
