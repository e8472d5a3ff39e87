//! The chat page in a real browser: headless Chromium driven over WebDriver (chromedriver) with
//! fantoccini, against the whole demo on `127.0.0.1:0`.
//!
//! Skips (with a `SKIPPED:` line) when chromium or chromedriver is not installed, unless
//! `GW_REQUIRE_BROWSER=1`, which makes that a failure. `scripts/install-browser.sh` installs both.
//! Leaves a screenshot in `target/test-artifacts/chat-browser.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Demo, TIMEOUT};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SKIP: &str = "SKIPPED: chromium/chromedriver not found (apt-get install chromium chromium-driver)";

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |dir| dir.join(n))).find(|p| p.is_file())
}

/// A chromedriver process on a port it picked itself (`--port=0`); killed on drop.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver; one that ends without saying its port (seen once in CI, with
    /// three tests starting theirs at once) is started again, up to three times, and what it
    /// printed is in the panic if none does.
    async fn start(binary: &Path) -> Self {
        let mut said = Vec::new();
        for _ in 0..3 {
            match Self::try_start(binary).await {
                Ok(driver) => return driver,
                Err(output) => said.push(output),
            }
        }
        panic!("chromedriver did not report its port; it printed: {said:?}");
    }

    async fn try_start(binary: &Path) -> Result<Self, String> {
        let mut child = tokio::process::Command::new(binary)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        // "ChromeDriver was started successfully on port 36895."
        let port = tokio::time::timeout(TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok().filter(|p| *p != 0);
                }
                printed.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(port) = port else { return Err(printed.join(" | ")) };
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, url: format!("http://127.0.0.1:{port}") })
    }

    /// A new browser (its own profile, so its own sessionStorage).
    async fn session(&self, chromium: &Path) -> Result<Client, fantoccini::error::NewSessionError> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1100,720", "--no-first-run", "--disable-extensions",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(caps).connect(&self.url).await
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What the page shows, read in one script.
const STATE_JS: &str = r#"
const q = (s) => document.querySelector(s);
return {
  status: q('#status').textContent,
  extensions: q('#status').dataset.extensions || '',
  statusClass: q('#status').className,
  clientId: q('#client-id').textContent,
  room: q('#room-label').textContent,
  chatVisible: !q('#chat').hidden,
  loginVisible: !q('#login').hidden,
  loginError: q('#login-error').textContent,
  members: [...document.querySelectorAll('#members .member')].map(li => ({
    id: li.getAttribute('data-client-id'), name: li.firstChild ? li.firstChild.textContent : '',
  })),
  messages: [...document.querySelectorAll('#messages .msg')].map(d => ({
    cls: d.className, text: d.textContent, html: d.innerHTML,
    imgs: [...d.querySelectorAll('img')].map(i => ({ src: i.getAttribute('src'), width: i.naturalWidth, done: i.complete })),
    links: [...d.querySelectorAll('a')].map(a => a.getAttribute('href')),
    tags: [...d.querySelectorAll('*')].map(e => e.tagName.toLowerCase()),
  })),
  pwned: window.pwned === true,
};
"#;

#[derive(Debug)]
struct Page {
    state: Value,
}

impl Page {
    fn status(&self) -> &str {
        self.state["status"].as_str().unwrap_or_default()
    }
    fn client_id(&self) -> &str {
        self.state["clientId"].as_str().unwrap_or_default()
    }
    fn member_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["name"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    }
    fn member_ids(&self) -> Vec<&str> {
        self.state["members"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect()
    }
    fn messages(&self) -> impl Iterator<Item = &Value> {
        self.state["messages"].as_array().into_iter().flatten()
    }
    /// The messages whose class list contains `class` and whose text contains `text`.
    fn find(&self, class: &str, text: &str) -> Vec<&Value> {
        self.messages()
            .filter(|m| m["cls"].as_str().unwrap_or_default().split(' ').any(|c| c == class))
            .filter(|m| m["text"].as_str().unwrap_or_default().contains(text))
            .collect()
    }
    fn has(&self, class: &str, text: &str) -> bool {
        !self.find(class, text).is_empty()
    }
    fn texts(&self) -> Vec<String> {
        self.messages().map(|m| format!("[{}] {}", m["cls"].as_str().unwrap_or(""), m["text"])).collect()
    }
}

/// Chromium and chromedriver, or `None` after saying the browser tests skip (a panic instead
/// with `GW_REQUIRE_BROWSER=1`).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_in_path(&["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]);
    let chromedriver = find_in_path(&["chromedriver"]);
    if let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) {
        return Some((chromium, chromedriver));
    }
    if std::env::var("GW_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("GW_REQUIRE_BROWSER=1 but chromium/chromedriver not found (run scripts/install-browser.sh)");
    }
    println!("{SKIP}");
    eprintln!("{SKIP}");
    None
}

/// One Chromium session (a failure panics; the driver, started `kill_on_drop`, goes with the
/// test).
async fn one_session(driver: &Driver, chromium: &Path) -> Client {
    driver
        .session(chromium)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// After a recovery: the conversation goes on, and Ann is still one client to the server (Bob
/// sees no leave and no second join of hers), never told it could not resume.
async fn still_one_client(ann: &Client, bob: &mut common::Chatter) {
    bob.say("after").await;
    let p = wait_for(ann, "Ann", "the conversation goes on", |p| p.has("say", "after")).await;
    assert_eq!(p.member_names().iter().filter(|n| *n == "Ann").count(), 1, "{:?}", p.member_names());
    assert!(!p.has("notice", "Could not resume"), "{:?}", p.texts());
}

/// Closes the session, the driver and the demo, then re-raises the scenario's panic, if any.
async fn finish(result: Result<(), tokio::task::JoinError>, ann: Client, driver: Driver, demo: Demo) {
    let _ = ann.close().await;
    driver.stop().await;
    demo.stop().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn page(c: &Client) -> Page {
    Page { state: c.execute(STATE_JS, vec![]).await.expect("read the page state") }
}

/// Polls the page until `cond` holds; panics with `what` and the last state after the timeout.
async fn wait_for(c: &Client, who: &str, what: &str, cond: impl Fn(&Page) -> bool) -> Page {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let p = page(c).await;
        if cond(&p) {
            return p;
        }
        if Instant::now() > deadline {
            panic!(
                "{who}: timed out waiting for: {what}\nstatus: {:?}, members: {:?}\nmessages:\n  {}",
                p.status(),
                p.member_names(),
                p.texts().join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).click().await.unwrap();
}

/// Opens the page, joins `room` as `name`, waits until connected; returns the client id.
async fn join(c: &Client, url: &str, name: &str, room: &str) -> String {
    c.goto(url).await.unwrap();
    fill(c, "#name", name).await;
    fill(c, "#room", room).await;
    click(c, "#join").await;
    let p = wait_for(c, name, "connected and listed as a member", |p| {
        p.status() == "connected" && !p.client_id().is_empty() && p.member_ids().contains(&p.client_id())
    })
    .await;
    assert_eq!(p.state["room"], format!("#{room}"));
    assert!(p.state["chatVisible"].as_bool().unwrap() && !p.state["loginVisible"].as_bool().unwrap());
    p.client_id().to_string()
}

/// Types a message into `#input` and presses `#send`.
async fn say(c: &Client, text: &str) {
    fill(c, "#input", text).await;
    click(c, "#send").await;
}

/// Serves one SVG picture over HTTP, for the image link test (no internet needed).
async fn picture_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="160" height="90"><rect width="160" height="90" rx="12" fill="#3b7ddd"/><text x="80" y="54" font-family="sans-serif" font-size="22" text-anchor="middle" fill="#fff">cat.svg</text></svg>"##;
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/svg+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    SVG.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(SVG.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/cat.svg")
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("test-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_in_the_page() {
    let started = Instant::now();
    let Some((chromium, chromedriver)) = browser() else { return };

    let demo = Demo::start().await;
    let driver = Driver::start(&chromedriver).await;
    let sessions = tokio::join!(driver.session(&chromium), driver.session(&chromium), driver.session(&chromium));
    let (ann, bob, cid) = match sessions {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (a, b, c) => {
            let mut errors = Vec::new();
            for s in [a, b, c] {
                match s {
                    Ok(c) => drop(c.close().await),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            driver.stop().await;
            panic!("cannot open Chromium sessions through chromedriver: {errors:?}");
        }
    };
    // The scenario runs in its own task so that, whatever happens, every browser is closed here
    // (killing chromedriver alone would leave them running).
    let scenario = tokio::spawn(scenario(demo.page_url(), demo.addrs.web, ann.clone(), bob.clone(), cid.clone()));
    let result = scenario.await;
    for c in [ann, bob, cid] {
        let _ = c.close().await; // Bob's is closed already
    }
    driver.stop().await;
    demo.stop().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    println!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

async fn scenario(url: String, web: std::net::SocketAddr, ann: Client, bob: Client, cid: Client) {
    // ---- join: each sees the others in #members ----
    let ann_id = join(&ann, &url, "Ann", "garden").await;
    let bob_id = join(&bob, &url, "Bob", "garden").await;
    let cid_id = join(&cid, &url, "Cid", "garden").await;
    for (c, who) in [(&ann, "Ann"), (&bob, "Bob"), (&cid, "Cid")] {
        let p = wait_for(c, who, "all three members listed", |p| p.member_names() == ["Ann", "Bob", "Cid"]).await;
        let mut ids = p.member_ids();
        ids.sort();
        let mut want = vec![ann_id.as_str(), bob_id.as_str(), cid_id.as_str()];
        want.sort();
        assert_eq!(ids, want, "{who}: data-client-id of the members");
    }
    let p = page(&ann).await;
    assert!(p.has("notice", "Bob joined") && p.has("notice", "Cid joined"), "{:?}", p.texts());

    // ---- compressed: Chromium negotiated permessage-deflate, and a long message (compressed by
    // Chromium on the way in, by the gateway on the way out: over its 256-byte threshold) reads
    // the same in every page ----
    for (c, who) in [(&ann, "Ann"), (&bob, "Bob"), (&cid, "Cid")] {
        let ext = page(c).await.state["extensions"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            ext, "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "{who}: the extensions Chromium negotiated"
        );
    }
    let long: String = (1..=40).map(|i| format!("line {i} of a long message; ")).collect();
    say(&bob, &long).await;
    for (c, who) in [(&ann, "Ann"), (&bob, "Bob"), (&cid, "Cid")] {
        wait_for(c, who, "Bob's long message, whole", |p| p.has("say", long.trim_end())).await;
    }

    // ---- a room message with an emoji shortcode and an image link ----
    let picture = picture_server().await;
    say(&ann, &format!("Hello garden :smile: :tada: look {picture}")).await;
    for (c, who) in [(&ann, "Ann"), (&bob, "Bob"), (&cid, "Cid")] {
        let p = wait_for(c, who, "Ann's room message, with its picture loaded", |p| {
            p.find("say", "Hello garden").first().is_some_and(|m| m["imgs"][0]["width"].as_u64() > Some(0))
        })
        .await;
        let m = p.find("say", "Hello garden")[0];
        let text = m["text"].as_str().unwrap();
        assert!(text.contains("Hello garden 😄 🎉 look"), "{who}: emoji shortcodes become emoji: {text}");
        assert!(text.contains("Ann"), "{who}: the sender's name: {text}");
        assert_eq!(m["imgs"][0]["src"], picture.as_str(), "{who}: the image link is shown as an image");
        if who == "Ann" {
            assert!(m["cls"].as_str().unwrap().contains("mine"), "own messages are marked: {m}");
        }
    }

    // ---- markup is shown as text, never interpreted ----
    say(&bob, "1 < 2 && 3 > 2, <3").await;
    let announce =
        json!({"content": "<b>not bold</b> <img src=x onerror=\"window.pwned=true\"> https://example.com/page"});
    let (status, body) = common::http(web, "POST", "/api/announce", Some(&announce.to_string())).await.unwrap();
    assert_eq!(status, 200, "{body}");
    for (c, who) in [(&ann, "Ann"), (&bob, "Bob"), (&cid, "Cid")] {
        let p = wait_for(c, who, "Bob's message and the announcement", |p| {
            p.has("say", "1 < 2 && 3 > 2, <3") && p.has("announce", "<b>not bold</b>")
        })
        .await;
        let a = p.find("announce", "<b>not bold</b>")[0];
        let tags = a["tags"].as_array().unwrap();
        assert!(!tags.contains(&json!("b")) && !tags.contains(&json!("img")), "{who}: markup escaped: {a}");
        assert_eq!(a["links"], json!(["https://example.com/page"]), "{who}: links are links: {a}");
        assert!(!p.state["pwned"].as_bool().unwrap(), "{who}: no script ran");
    }
    // Tags in chat messages are refused by the server, and only the sender sees why.
    say(&cid, "<script>window.pwned=true</script>").await;
    wait_for(&cid, "Cid", "the error about HTML", |p| p.has("error", "HTML is not allowed")).await;

    // ---- a private message: Ann to Bob, picked in the member list ----
    click(&ann, &format!("#members .member[data-client-id='{bob_id}']")).await;
    let to = ann.find(Locator::Css("#to")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(to.as_deref(), Some(bob_id.as_str()), "clicking a member selects them as the recipient");
    say(&ann, "psst, just for you Bob").await;
    wait_for(&bob, "Bob", "the private message", |p| p.has("private", "psst, just for you Bob")).await;
    let p = wait_for(&ann, "Ann", "her copy of the private message", |p| p.has("private", "psst")).await;
    let copy = p.find("private", "psst")[0]["text"].as_str().unwrap().to_string();
    assert!(copy.contains("to Bob"), "the sender's copy names the recipient: {copy}");
    // Back to everyone; Cid must see this next message but never the private one.
    ann.find(Locator::Css("#to")).await.unwrap().select_by_value("all").await.unwrap();
    say(&ann, "back to everyone").await;
    let p = wait_for(&cid, "Cid", "the next room message", |p| p.has("say", "back to everyone")).await;
    assert!(!p.texts().iter().any(|t| t.contains("psst")), "Cid saw the private message: {:?}", p.texts());
    wait_for(&bob, "Bob", "the next room message", |p| p.has("say", "back to everyone")).await;

    // ---- Bob closes his browser: the others see him leave ----
    bob.close().await.expect("close Bob's session");
    for (c, who) in [(&ann, "Ann"), (&cid, "Cid")] {
        wait_for(c, who, "Bob's leave notice and the shorter member list", |p| {
            p.has("notice", "Bob left") && p.member_names() == ["Ann", "Cid"]
        })
        .await;
    }
    say(&cid, "bye Bob :wave:").await;
    wait_for(&ann, "Ann", "Cid's goodbye", |p| p.has("say", "bye Bob 👋")).await;

    // ---- the screenshot ----
    let png = ann.screenshot().await.expect("screenshot");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("chat-browser.png");
    std::fs::write(&file, &png).unwrap();
    println!("screenshot: {}", file.display());

    // ---- narrow and wide layouts, with more messages than fit ----
    layouts(&ann, &cid, web).await;

    // ---- the emoji picker inserts shortcodes ----
    let p: Value = cid.execute("return document.querySelector('#emoji-picker').hidden", vec![]).await.unwrap();
    assert_eq!(p, json!(true), "the picker starts closed");
    click(&cid, "#emoji-button").await;
    let hint: Value = cid
        .execute("const p = document.querySelector('#emoji-picker'); return p.hidden ? '' : p.textContent", vec![])
        .await
        .unwrap();
    assert!(hint.as_str().is_some_and(|h| h.contains(":smile:") && h.contains("🎉")), "visible hint and emoji: {hint}");
    fill(&cid, "#input", "party").await;
    click(&cid, "#emoji-picker button[data-code='tada']").await;
    let typed = cid.find(Locator::Css("#input")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(typed.as_deref(), Some("party :tada: "), "the picker inserts the shortcode");
    click(&cid, "#send").await;
    wait_for(&ann, "Ann", "Cid's picked emoji", |p| p.has("say", "party 🎉")).await;
    click(&cid, "#emoji-button").await;

    // ---- a favicon, so no load of the page ends in a 404 ----
    for path in ["/favicon.ico", "/favicon.svg"] {
        let (status, body) = common::http(web, "GET", path, None).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.starts_with("<svg"), "{path}: {body}");
    }
    let icon: Value =
        ann.execute("return document.querySelector('link[rel=icon]').getAttribute('href')", vec![]).await.unwrap();
    assert_eq!(icon, json!("/favicon.svg"));

    // ---- switching rooms ----
    fill(&cid, "#new-room", "pond").await;
    click(&cid, "#switch-room").await;
    wait_for(&cid, "Cid", "alone in the new room", |p| {
        p.state["room"] == "#pond" && p.status() == "connected" && p.member_names() == ["Cid"]
    })
    .await;
    wait_for(&ann, "Ann", "Cid leaving the garden", |p| p.has("notice", "Cid left") && p.member_names() == ["Ann"])
        .await;
    // A room name the server would refuse is refused right away, and Cid stays where he is.
    fill(&cid, "#new-room", "two words").await;
    click(&cid, "#switch-room").await;
    let p = wait_for(&cid, "Cid", "the room name error", |p| p.has("error", "Room names may contain")).await;
    assert_eq!(p.state["room"], "#pond");
    cid.set_window_size(420, 760).await.unwrap();
    let narrow = cid.screenshot().await.expect("screenshot");
    std::fs::write(dir.join("chat-browser-narrow.png"), &narrow).unwrap();

    // ---- leaving, and nicknames and rooms the server would refuse ----
    click(&ann, "#leave").await;
    wait_for(&ann, "Ann", "the login form", |p| {
        p.state["loginVisible"] == true && p.state["chatVisible"] == false && p.status() == "disconnected"
    })
    .await;
    for (name, room, error) in [
        ("<b>Ann</b>", "garden", "may not contain < or >"),
        ("Ann", "#general", "letters, digits, - and _ only"),
        ("Ann", "two words", "letters, digits, - and _ only"),
    ] {
        fill(&ann, "#name", name).await;
        fill(&ann, "#room", room).await;
        click(&ann, "#join").await;
        let p =
            wait_for(&ann, "Ann", error, |p| p.state["loginError"].as_str().is_some_and(|e| e.contains(error))).await;
        assert_eq!(p.state["loginVisible"], true, "{name} {room}: still on the login form");
    }

    // ---- the heartbeat and reconnecting, against a scripted server (`?ws=` overrides the URL) ----
    heartbeat_and_reconnect(&cid, &url).await;
}

/// The page answers `{"type":"ping"}` with `{"type":"pong"}`, shows "reconnecting" when the server
/// goes away, reconnects on its own when it is back and logs in again with the same name and room.
async fn heartbeat_and_reconnect(c: &Client, page_url: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The session still remembers Cid's name and room: loading the page joins right away.
    c.goto(&format!("{page_url}?ws=ws://{addr}/")).await.unwrap();

    // A login the server refuses sends the page back to the login form.
    let (tcp, _) = tokio::time::timeout(TIMEOUT, listener.accept()).await.expect("the page connects").unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    ws.send(Message::text(json!({"type": "welcome", "client_id": "fake-0"}).to_string())).await.unwrap();
    let login = next_json(&mut ws).await;
    assert_eq!(login, json!({"type": "login", "name": "Cid", "room": "pond"}));
    ws.send(Message::text(json!({"type": "error", "message": "that nickname is taken"}).to_string())).await.unwrap();
    wait_for(c, "Cid", "the refused login", |p| {
        p.state["loginVisible"] == true
            && p.state["loginError"].as_str().is_some_and(|e| e.contains("that nickname is taken"))
    })
    .await;
    drop(ws);
    fill(c, "#name", "Cid").await;
    fill(c, "#room", "garden").await;
    click(c, "#join").await;

    async fn accept_login(
        listener: &TcpListener,
        id: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        let (tcp, _) = tokio::time::timeout(TIMEOUT, listener.accept()).await.expect("the page connects").unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.send(Message::text(json!({"type": "welcome", "client_id": id}).to_string())).await.unwrap();
        let login = next_json(&mut ws).await;
        assert_eq!(login["type"], "login", "{login}");
        assert_eq!((login["name"].as_str(), login["room"].as_str()), (Some("Cid"), Some("garden")), "{login}");
        let members = json!({ id: "Cid" });
        let reply = json!({"type": "login", "client_id": id, "name": "Cid", "room": "garden", "time": "2024-01-01 12:00:00", "members": members});
        ws.send(Message::text(reply.to_string())).await.unwrap();
        ws.send(Message::text(json!({"type": "history", "messages": []}).to_string())).await.unwrap();
        ws
    }
    async fn next_json(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Value {
        loop {
            match tokio::time::timeout(TIMEOUT, ws.next()).await.expect("the page answers") {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(Message::Close(_))) | None => panic!("the page closed the connection"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{e}"),
            }
        }
    }

    let mut ws = accept_login(&listener, "fake-1").await;
    wait_for(c, "Cid", "connected to the scripted server", |p| p.status() == "connected" && p.client_id() == "fake-1")
        .await;
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong"}));

    // The server goes away (and refuses connections for a while): the page says it reconnects.
    drop(listener);
    drop(ws);
    let p = wait_for(c, "Cid", "the reconnecting status", |p| p.status().contains("reconnecting")).await;
    assert_eq!(p.state["statusClass"], "wait");
    assert!(p.has("notice", "Disconnected from the server"), "the transcript says so too: {:?}", p.texts());
    let listener = common_bind_again(addr).await;
    let _ws = accept_login(&listener, "fake-2").await;
    wait_for(c, "Cid", "reconnected with a new client id", |p| p.status() == "connected" && p.client_id() == "fake-2")
        .await;
}

/// Where the parts of the page are, and whether the transcript scrolls inside its pane.
const LAYOUT_JS: &str = r#"
const box = (s) => { const b = document.querySelector(s).getBoundingClientRect();
  return { top: b.top, bottom: b.bottom, left: b.left, right: b.right, height: b.height }; };
const m = document.querySelector('#messages');
const header = box('header');
const atHeader = document.elementFromPoint(8, header.top + header.height / 2);
const aside = box('aside');
const atMembers = document.elementFromPoint(aside.left + 10, aside.top + 10);
return {
  vw: window.innerWidth, vh: window.innerHeight, header, aside, main: box('#main'), messages: box('#messages'),
  composer: box('#composer'), pageHeight: document.documentElement.scrollHeight,
  scrollHeight: m.scrollHeight, clientHeight: m.clientHeight,
  headerOnTop: !!(atHeader && atHeader.closest('header')),
  membersOnTop: !!(atMembers && atMembers.closest('aside')),
  count: m.querySelectorAll('.msg').length,
};
"#;

/// Fills the room with 25 announcements, then checks the page at 420×600 (stacked: header, member
/// strip and composer visible, the transcript scrolls in its pane) and at 1100×720 (side by side).
async fn layouts(ann: &Client, cid: &Client, web: std::net::SocketAddr) {
    for n in 1..=25 {
        let body =
            json!({"room": "garden", "content": format!("filler {n} of 25, long enough to wrap on a phone screen")});
        let (status, answer) = common::http(web, "POST", "/api/announce", Some(&body.to_string())).await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    wait_for(cid, "Cid", "the 25 announcements", |p| p.has("announce", "filler 25 of 25")).await;
    wait_for(ann, "Ann", "the 25 announcements", |p| p.has("announce", "filler 25 of 25")).await;
    for (width, height) in [(420u32, 600u32), (1100, 720)] {
        cid.set_window_size(width, height).await.unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let l = loop {
            let l: Value = cid.execute(LAYOUT_JS, vec![]).await.unwrap();
            let narrow = l["vw"].as_f64().unwrap() < 700.0;
            if narrow == (width < 700) || Instant::now() > deadline {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let f = |path: &str| -> f64 {
            path.split('.').fold(&l, |v, k| &v[k]).as_f64().unwrap_or_else(|| panic!("{path} in {l}"))
        };
        let what = format!("{width}x{height}: {l}");
        assert!(f("header.top") >= 0.0 && f("header.height") > 0.0, "header on screen, {what}");
        assert_eq!(l["headerOnTop"], true, "nothing covers the header, {what}");
        assert_eq!(l["membersOnTop"], true, "nothing covers the member list, {what}");
        assert!(f("aside.height") > 20.0 && f("aside.bottom") <= f("vh") + 0.5, "member list visible, {what}");
        assert!(f("messages.top") >= f("header.bottom") - 0.5, "transcript below the header, {what}");
        assert!(f("composer.bottom") <= f("vh") + 0.5, "composer on screen, {what}");
        assert!(f("pageHeight") <= f("vh") + 1.0, "the page itself does not grow past the window, {what}");
        assert!(f("scrollHeight") > f("clientHeight"), "the transcript scrolls inside its pane, {what}");
        if width < 700 {
            assert!(f("aside.bottom") <= f("main.top") + 0.5, "stacked: members above the transcript, {what}");
        } else {
            assert!(f("aside.left") >= f("main.right") - 0.5, "side by side: members right of the transcript, {what}");
        }
        if width < 700 {
            let png = cid.screenshot().await.expect("screenshot");
            std::fs::write(artifacts_dir().join("chat-browser-420x600.png"), &png).unwrap();
        }
    }
}

async fn common_bind_again(addr: std::net::SocketAddr) -> TcpListener {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() > deadline => panic!("cannot bind {addr} again: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A TCP proxy in front of the gateway whose connections the test can cut: both sides are reset
/// (`SO_LINGER` 0, no close frame), as when a network path dies. While shut, it resets every new
/// connection at once.
struct CutProxy {
    addr: std::net::SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if !*watch.borrow_and_update() {
                        reset(client);
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return reset(client) };
                    let (mut client, mut server) = (client, server);
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = watch.wait_for(|open| !open) => {}
                    }
                    reset(client);
                    reset(server);
                });
            }
        });
        Self { addr, open, task }
    }

    /// Resets every connection through the proxy and refuses new ones until [`CutProxy::reopen`].
    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn reopen(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes with a reset rather than a FIN.
fn reset(stream: tokio::net::TcpStream) {
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);
}

/// The page's connection is cut mid-conversation; what Bob says meanwhile appears on the page
/// exactly once after it reconnects, under the same client id (connection state recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_recovers_a_cut_connection() {
    let Some((chromium, chromedriver)) = browser() else { return };
    let demo = Demo::start().await;
    let proxy = CutProxy::start(demo.addrs.websocket).await;
    let driver = Driver::start(&chromedriver).await;
    let ann = one_session(&driver, &chromium).await;
    let url = format!("{}?ws=ws://{}/", demo.page_url(), proxy.addr);
    let scenario = tokio::spawn({
        let ann = ann.clone();
        let ws_url = demo.ws_url();
        async move {
            let ann_id = join(&ann, &url, "Ann", "meadow").await;
            let mut bob = common::Chatter::connect(&ws_url).await;
            bob.login("Bob", "meadow").await;
            wait_for(&ann, "Ann", "Bob listed", |p| p.member_names().contains(&"Bob".to_string())).await;
            bob.say("before the cut").await;
            wait_for(&ann, "Ann", "Bob's first message", |p| p.has("say", "before the cut")).await;

            proxy.cut();
            wait_for(&ann, "Ann", "the reconnecting status", |p| p.status().contains("reconnecting")).await;
            let missed = ["while away 1", "while away 2", "while away 3"];
            for text in missed {
                bob.say(text).await;
            }
            proxy.reopen();

            let p = wait_for(&ann, "Ann", "reconnected with Bob's messages", |p| {
                p.status() == "connected" && missed.iter().all(|t| p.has("say", t))
            })
            .await;
            assert_eq!(p.client_id(), ann_id, "the page keeps its client id: {:?}", p.texts());
            assert!(p.has("notice", "nothing lost"), "the page says it resumed: {:?}", p.texts());
            for text in missed.iter().chain(&["before the cut"]) {
                assert_eq!(p.find("say", text).len(), 1, "{text:?} shown exactly once: {:?}", p.texts());
            }
            still_one_client(&ann, &mut bob).await;
        }
    });
    finish(scenario.await, ann, driver, demo).await;
}

/// The page's gateway is stopped (an upgrade) mid-conversation: it hands the page over to the
/// demo's gateway, the page comes back there on its own (`?ws=` lists both), and what Bob says
/// meanwhile appears exactly once, under the same client id (issue 25 §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_s_gateway_restarts_mid_conversation_and_the_page_loses_nothing() {
    let Some((chromium, chromedriver)) = browser() else { return };
    let demo = Demo::start().await;
    // A second gateway in the demo's cluster (no secret, as the demo), with recovery: the page's.
    let second = gw_integration_tests::GatewayHandle::start_with(&[demo.addrs.register], "", |c| {
        c.recovery.enabled = true;
        c.ping_data = gw_chat_demo::app::PING_DATA.into();
    })
    .await;
    gw_integration_tests::wait_for_workers(&second, 1).await;
    let driver = Driver::start(&chromedriver).await;
    let ann = one_session(&driver, &chromium).await;
    let url = format!("{}?ws={},{}", demo.page_url(), second.ws_url, demo.ws_url());
    let stopping = second.gw.clone();
    let scenario = tokio::spawn({
        let ann = ann.clone();
        let ws_url = demo.ws_url();
        async move {
            let ann_id = join(&ann, &url, "Ann", "meadow").await;
            assert!(stopping.state.client_count() >= 1, "the page is on the second gateway");
            let mut bob = common::Chatter::connect(&ws_url).await;
            bob.login("Bob", "meadow").await;
            wait_for(&ann, "Ann", "Bob listed", |p| p.member_names().contains(&"Bob".to_string())).await;
            bob.say("before the restart").await;
            wait_for(&ann, "Ann", "Bob's first message", |p| p.has("say", "before the restart")).await;

            // Bob talks on while the page's gateway stops and hands the page over.
            let talk = tokio::spawn(async move {
                let said: Vec<String> = (1..=20).map(|i| format!("during the restart, line {i}!")).collect();
                for text in &said {
                    bob.say(text).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (bob, said)
            });
            second.stop().await;
            let (mut bob, said) = talk.await.unwrap();
            assert!(stopping.state.metrics.handover_shipped_clients.load(std::sync::atomic::Ordering::Relaxed) >= 1);

            let p = wait_for(&ann, "Ann", "back with every message", |p| {
                p.status() == "connected" && said.iter().all(|t| p.has("say", t))
            })
            .await;
            assert_eq!(p.client_id(), ann_id, "the page keeps its client id: {:?}", p.texts());
            for text in said.iter().map(String::as_str).chain(["before the restart"]) {
                assert_eq!(p.find("say", text).len(), 1, "{text:?} shown exactly once: {:?}", p.texts());
            }
            // In order, as Bob said them.
            let texts = p.texts();
            let order: Vec<usize> =
                said.iter().map(|t| texts.iter().position(|x| x.contains(t.as_str())).unwrap()).collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {texts:?}");
            still_one_client(&ann, &mut bob).await;
        }
    });
    finish(scenario.await, ann, driver, demo).await;
}
