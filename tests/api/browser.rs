//! The pairing page in a real browser: Debian's headless Chromium, driven over WebDriver by
//! chromedriver through thirtyfour. Each state is saved as a screenshot under
//! target/screenshots/.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
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

    async fn click(&self, css: &str) {
        let element = self.driver().find(By::Css(css)).await;
        element
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap();
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

    async fn screenshot(&self, name: &str) {
        self.until(
            "return document.getAnimations().every(a => a.playState === 'finished')",
            json!(true),
        )
        .await;
        let bytes = self.driver().screenshot_as_png().await.unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

const CODE: &str = "return document.getElementById('code').textContent";
const HEADLINE: &str = "return document.getElementById('outcome').hidden ? '' : document.getElementById('headline').textContent";

/// The phone succeeds; the open page says so without loading itself again.
async fn approved_without_reload(browser: &Browser, sb: &Sandbox, code: &str) {
    browser.run("window.__sameDocument = true").await;
    assert_eq!(sb.phone(code, "SUCCESS", None).await.status(), 200);
    browser.until(HEADLINE, json!("Face confirmed.")).await;
    assert_eq!(
        browser.run("return window.__sameDocument === true").await,
        json!(true),
        "no reload"
    );
}

#[sqlx::test]
async fn the_page_follows_a_login_to_success_without_reloading(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let browser = Browser::start().await;
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser.until(CODE, json!(code)).await;
    let label = browser
        .run("return document.getElementById('code').getAttribute('aria-label')")
        .await;
    assert_eq!(
        label,
        json!(format!(
            "Code: {}",
            code.chars().map(String::from).collect::<Vec<_>>().join(" ")
        ))
    );
    browser.until("return /works for \\d+:\\d\\d more/.test(document.getElementById('countdown').textContent)", json!(true)).await;
    browser.screenshot("pairing-pending").await;

    approved_without_reload(&browser, &sb, code).await;
    browser.screenshot("pairing-approved").await;
}

#[sqlx::test]
async fn a_failure_is_explained_and_a_new_code_can_be_had(pool: PgPool) {
    let sb = Sandbox::start(pool).await;
    let login = sb.app.login().await;
    let code = login["attempt"]["digit_string"].as_str().unwrap();
    let browser = Browser::start().await;
    browser.open(login["watch_url"].as_str().unwrap()).await;
    browser.until(CODE, json!(code)).await;

    sb.phone(code, "FAILED", Some("FACE_MISMATCH")).await;
    browser.until(HEADLINE, json!("That did not work.")).await;
    let detail = browser
        .run("return document.getElementById('detail').textContent")
        .await;
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("did not match the person on record"),
        "{detail}"
    );
    assert_eq!(
        browser
            .run("return document.getElementById('new-code').hidden")
            .await,
        json!(false)
    );
    browser.screenshot("pairing-failed").await;

    browser.click("#new-code").await;
    browser
        .until(
            "return document.getElementById('pending').hidden",
            json!(false),
        )
        .await;
    let state = sb.app.state(login["login_id"].as_str().unwrap()).await;
    assert_eq!(state["attempt"]["number"], 2);
    let new_code = state["attempt"]["digit_string"].as_str().unwrap();
    browser.until(CODE, json!(new_code)).await;
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
            CODE,
            json!(login["attempt"]["digit_string"].as_str().unwrap()),
        )
        .await;
    browser.run("window.__sameDocument = true").await;
    browser.until(HEADLINE, json!("The code expired.")).await;
    assert_eq!(
        browser.run("return window.__sameDocument === true").await,
        json!(true),
        "no reload"
    );
    assert_eq!(
        browser
            .run("return document.getElementById('new-code').hidden")
            .await,
        json!(false)
    );
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
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
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
    browser.until(CODE, json!(code)).await;
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
                r#"approved csrf-7Hq2 ["state","type"] from {facepair_origin}"#
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
    browser.until(CODE, json!(code)).await;
    const LONG_POLLED: &str =
        "return performance.getEntriesByType('resource').some(e => e.name.endsWith('?wait=25'))";
    browser.until(LONG_POLLED, json!(true)).await;
    approved_without_reload(&browser, &sb, code).await;
    let streams = browser
        .run("return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/events') && e.responseStatus === 200).length")
        .await;
    assert_eq!(streams, json!(0), "a stream got through after all");
}
