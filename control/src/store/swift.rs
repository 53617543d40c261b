//! Swift stores: objects in one container of one account, reached with a
//! token from tempauth or Keystone (renewed before it runs out, and again
//! on a `401`). An upload of at most [`SINGLE_PUT_MAX`] bytes is one PUT; a
//! larger one is a Static Large Object whose segments stream straight
//! through (no segment is held in memory) into the same container, so a
//! container-scoped TempURL key reads them too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use md5::Digest as _;

use bytes::{Bytes, BytesMut};
use glance_link::swift::{
    AuthError, Held, MAX_AUTH_BODY, SessionCache, Step, SwiftAccount, TempUrlKey,
};
use reqwest::{Method, StatusCode};

use super::StoreError;

/// Largest upload stored as one object; past it, segments.
pub const SINGLE_PUT_MAX: usize = 16 << 20;

/// The first segments' size unless configured (Glance's chunk size).
pub const DEFAULT_SEGMENT_BYTES: u64 = 200 << 20;

/// Smallest configurable segment size.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;

/// Largest configurable segment size: grown 16 times, a segment stays
/// within Swift's 5 GiB object limit.
pub const MAX_SEGMENT_BYTES: u64 = 320 << 20;

/// Segments of each size; every [`SEGMENTS_PER_SIZE`] the size doubles, up
/// to [`MAX_DOUBLINGS`] times.
const SEGMENTS_PER_SIZE: usize = 200;

/// The most doublings of the segment size.
const MAX_DOUBLINGS: usize = 4;

/// Swift's default limit on segments in one manifest (`max_manifest_segments`).
pub const MAX_SEGMENTS: usize = 1000;

/// Longest wait for the answer to a request without a streamed body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a manifest's PUT or DELETE, which Swift answers after
/// checking or deleting every segment.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(1800);

/// Chunks queued towards a segment's PUT.
const SEGMENT_QUEUE: usize = 4;

/// The size of segment `index` (from 0) when the first ones have `base` bytes.
pub const fn segment_bytes(base: u64, index: usize) -> u64 {
    let band = index / SEGMENTS_PER_SIZE;
    base << if band < MAX_DOUBLINGS {
        band
    } else {
        MAX_DOUBLINGS
    }
}

/// The largest object [`MAX_SEGMENTS`] segments hold.
pub const fn max_object(base: u64) -> u64 {
    let mut total = 0;
    let mut i = 0;
    while i < MAX_SEGMENTS {
        total += segment_bytes(base, i);
        i += 1;
    }
    total
}

// The default image_size_cap (1 TiB) fits, and no segment passes 5 GiB.
const _: () = assert!(
    max_object(DEFAULT_SEGMENT_BYTES) > 1 << 40
        && segment_bytes(MAX_SEGMENT_BYTES, MAX_SEGMENTS - 1) <= 5 << 30
);

/// A Swift container glance-api writes images to (no secret in `Debug`).
pub struct SwiftStore {
    account: SwiftAccount,
    http: reqwest::Client,
    /// The session; locked across authentication, so concurrent requests
    /// wait for one.
    session: tokio::sync::Mutex<SessionCache>,
    /// The TempURL key: for signing, and as the container metadata holds it.
    temp_url: Option<(TempUrlKey, String)>,
    segment_bytes: u64,
    container_ready: AtomicBool,
    /// The container's TempURL key was seen equal to ours.
    key_in_place: AtomicBool,
}

impl std::fmt::Debug for SwiftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftStore")
            .field("account", &self.account)
            .field("temp_urls", &self.temp_url.is_some())
            .field("segment_bytes", &self.segment_bytes)
            .finish_non_exhaustive()
    }
}

/// The status and a bounded piece of the body, for an error message.
async fn refusal(what: &str, resp: reqwest::Response) -> StoreError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    StoreError(format!("{what}: Swift answered {status} {text}"))
}

impl SwiftStore {
    /// `swift://container/object` of image `object`.
    pub fn location_url(&self, object: &str) -> String {
        format!(
            "swift://{}/{}",
            self.account.container(),
            self.account.object_name(object)
        )
    }

    /// A store in `account`'s container. With `temp_url_key`, it hands out
    /// TempURLs and keeps the container's `Temp-URL-Key` equal to it.
    pub fn new(
        account: SwiftAccount,
        temp_url_key: Option<String>,
        segment_bytes: u64,
        roots: &crate::tls::Roots,
    ) -> Result<SwiftStore, String> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes) {
            return Err(format!(
                "segment_bytes must be {MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES}"
            ));
        }
        let temp_url = temp_url_key
            .map(|text| TempUrlKey::new(&text).map(|key| (key, text)))
            .transpose()?;
        let http = roots
            .client()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the Swift client: {e}"))?;
        Ok(SwiftStore {
            account,
            http,
            session: tokio::sync::Mutex::new(SessionCache::default()),
            temp_url,
            segment_bytes,
            container_ready: AtomicBool::new(false),
            key_in_place: AtomicBool::new(false),
        })
    }

    /// The largest object this store can make.
    pub fn max_object(&self) -> u64 {
        max_object(self.segment_bytes)
    }

    /// A session for a caller that had `refused` refused by Swift (or
    /// none): the one held if still good, else a new one.
    async fn session(&self, refused: Option<&Arc<Held>>) -> Result<Arc<Held>, StoreError> {
        let mut cache = self.session.lock().await;
        match cache.begin(refused, Instant::now()) {
            Step::Ready(held) => Ok(held),
            Step::Failed(e) => Err(StoreError(e.to_string())),
            Step::Authenticate => {
                let outcome = self.authenticate().await;
                cache
                    .finish(outcome, Instant::now())
                    .map_err(|e| StoreError(e.to_string()))
            }
        }
    }

    async fn authenticate(&self) -> Result<glance_link::swift::Session, AuthError> {
        let req = self.account.auth_request();
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|e| AuthError::Transport(e.to_string()))?;
        let mut builder = self.http.request(method, &req.url).timeout(REQUEST_TIMEOUT);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let failed = |e: reqwest::Error| AuthError::Transport(e.without_url().to_string());
        let mut resp = builder.send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_AUTH_BODY {
                return Err(AuthError::Malformed("the answer is too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.account.parse_auth(status, &header, &body)
    }

    /// The URL of `rel` (empty for the container, else `/` and an object
    /// name, and any query) under the session's storage URL.
    fn url(&self, held: &Held, rel: &str) -> String {
        format!(
            "{}/{}{rel}",
            held.session
                .storage_url
                .url()
                .as_str()
                .trim_end_matches('/'),
            self.account.container()
        )
    }

    /// Sends a request whose body can be sent again: after a `401`, once
    /// more with a new token. The answer, whatever its status.
    async fn call(
        &self,
        method: Method,
        rel: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, StoreError> {
        self.call_within(REQUEST_TIMEOUT, method, rel, headers, body)
            .await
    }

    /// [`SwiftStore::call`], waiting up to `timeout` for the whole answer.
    async fn call_within(
        &self,
        timeout: Duration,
        method: Method,
        rel: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, StoreError> {
        let mut refused: Option<Arc<Held>> = None;
        loop {
            let held = self.session(refused.as_ref()).await?;
            let mut req = self
                .http
                .request(method.clone(), self.url(&held, rel))
                .timeout(timeout)
                .header("X-Auth-Token", &held.session.token);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(body) = &body {
                // Stated even when 0: hyper leaves it out of an empty PUT,
                // and Swift answers 411 without it.
                req = req
                    .header(reqwest::header::CONTENT_LENGTH, body.len())
                    .body(body.clone());
            }
            // Without the URL in the message: not a secret, but long.
            let resp = req
                .send()
                .await
                .map_err(|e| StoreError(format!("{method} {rel}: {}", e.without_url())))?;
            if resp.status() == StatusCode::UNAUTHORIZED && refused.is_none() {
                tracing::info!("Swift refused the token: authenticating again");
                refused = Some(held);
                continue;
            }
            return Ok(resp);
        }
    }

    /// Creates the container if need be and, with a TempURL key, makes it
    /// the container's `Temp-URL-Key` (the one it replaces moves to
    /// `Temp-URL-Key-2`, so links signed with it work until they expire).
    /// Done once per process; uploads call it first.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        if self.container_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let head = self.call(Method::HEAD, "", &[], None).await?;
        let current = head
            .headers()
            .get("x-container-meta-temp-url-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let exists = match head.status() {
            StatusCode::NOT_FOUND => false,
            s if s.is_success() => true,
            _ => return Err(refusal("HEAD the container", head).await),
        };
        let ours = self.temp_url.as_ref().map(|(_, text)| text.as_str());
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(ours) = ours
            && current.as_deref() != Some(ours)
        {
            headers.push(("X-Container-Meta-Temp-URL-Key", ours));
            if let Some(old) = &current {
                headers.push(("X-Container-Meta-Temp-URL-Key-2", old));
            }
        }
        if !exists || !headers.is_empty() {
            let method = if exists { Method::POST } else { Method::PUT };
            let resp = self.call(method, "", &headers, None).await?;
            if !resp.status().is_success() {
                return Err(refusal("create or update the container", resp).await);
            }
        }
        if ours.is_some() && current.as_deref() == ours {
            self.key_in_place.store(true, Ordering::Release);
        }
        if let Some(ours) = ours
            && current.as_deref() != Some(ours)
        {
            // tempurl drops the header silently for a user who does not own
            // the account: say so, once.
            let again = self.call(Method::HEAD, "", &[], None).await?;
            let set = again
                .headers()
                .get("x-container-meta-temp-url-key")
                .is_some_and(|v| v.as_bytes() == ours.as_bytes());
            self.key_in_place.store(set, Ordering::Release);
            if !set {
                tracing::warn!(
                    container = self.account.container(),
                    "cannot set the container's Temp-URL-Key (the Swift user does not own the \
                     account): direct links work only if the account's or container's key \
                     equals temp_url_key_file"
                );
            }
        }
        self.container_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the container's TempURL key is ours (known after
    /// [`SwiftStore::prepare`]): direct links work.
    pub fn temp_url_key_in_place(&self) -> bool {
        self.key_in_place.load(Ordering::Acquire)
    }

    /// PUTs `body` whole as object `name`, with its md5 for Swift to check.
    async fn put_whole(&self, name: &str, body: Bytes) -> Result<(), StoreError> {
        let etag = hex::encode(md5::Md5::digest(&body));
        let resp = self
            .call(
                Method::PUT,
                &format!("/{name}"),
                &[
                    ("ETag", &etag),
                    ("Content-Type", "application/octet-stream"),
                ],
                Some(body),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(refusal(&format!("PUT {name}"), resp).await);
        }
        Ok(())
    }

    /// Streams what `rx` yields into object `name`; its ETag (md5) once
    /// Swift stored it. A streamed body cannot be sent twice: a `401` here
    /// (a token revoked mid-upload) fails the upload, after forgetting the
    /// token.
    async fn put_stream(
        &self,
        name: &str,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<String, StoreError> {
        let held = self.session(None).await?;
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        let resp = self
            .http
            .put(self.url(&held, &format!("/{name}")))
            .header("X-Auth-Token", &held.session.token)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| StoreError(format!("PUT {name}: {}", e.without_url())))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.session.lock().await.forget(&held);
        }
        if resp.status() != StatusCode::CREATED {
            return Err(refusal(&format!("PUT {name}"), resp).await);
        }
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned())
            .ok_or_else(|| StoreError(format!("PUT {name}: Swift sent no ETag")))
    }

    /// Reads the object of image `object` (a large object whole, as Swift
    /// joins its segments), allowing `timeout` for all of it.
    pub async fn read(
        &self,
        object: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, StoreError> {
        let name = self.account.object_name(object);
        let resp = self
            .call_within(timeout, Method::GET, &format!("/{name}"), &[], None)
            .await?;
        if !resp.status().is_success() {
            return Err(refusal(&format!("GET {name}"), resp).await);
        }
        Ok(resp)
    }

    /// Deletes object `name`; gone already is fine.
    async fn delete_one(&self, rel: &str) -> Result<(), StoreError> {
        let resp = self.call(Method::DELETE, rel, &[], None).await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(refusal(&format!("DELETE {rel}"), resp).await),
        }
    }

    /// Deletes the object of image `object` (a manifest with its segments,
    /// or a plain object), then any segment a failed upload left.
    pub async fn delete(&self, object: &str) -> Result<(), StoreError> {
        let name = self.account.object_name(object);
        let resp = self
            .call_within(
                MANIFEST_TIMEOUT,
                Method::DELETE,
                &format!("/{name}?multipart-manifest=delete"),
                &[("Accept", "application/json")],
                None,
            )
            .await?;
        // A manifest's delete answers 200 and puts the outcome in the body;
        // for an object that is not a manifest the outcome (or the status)
        // is 400, and the plain delete below removes it.
        match resp.status() {
            StatusCode::OK => {
                let outcome = response_status(resp, &format!("DELETE {name}")).await?;
                if !["2", "400", "404"].iter().any(|s| outcome.starts_with(s)) {
                    return Err(StoreError(format!(
                        "DELETE {name}: Swift answered {outcome}"
                    )));
                }
            }
            s if s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST => {}
            _ => return Err(refusal(&format!("DELETE {name}"), resp).await),
        }
        // The object itself, whatever it was (gone already is fine).
        self.delete_one(&format!("/{name}")).await?;
        for leftover in self.list(&segment_dir(&name)).await? {
            self.delete_one(&format!("/{leftover}")).await?;
        }
        Ok(())
    }

    /// The names in the container starting with `prefix` (one listing page:
    /// up to 10,000 names).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("prefix", prefix)
            .append_pair("format", "json")
            .finish();
        let resp = self
            .call(Method::GET, &format!("?{query}"), &[], None)
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => return Ok(Vec::new()),
            s if s.is_success() => {}
            _ => return Err(refusal("list the container", resp).await),
        }
        let entries: Vec<Entry> = resp
            .json()
            .await
            .map_err(|e| StoreError(format!("list the container: {e}")))?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// A TempURL for a GET of image object `object`, valid until `expires`
    /// (Unix time); `None` without a TempURL key.
    pub async fn temp_url(&self, object: &str, expires: u64) -> Result<Option<String>, StoreError> {
        let Some((key, _)) = &self.temp_url else {
            return Ok(None);
        };
        // The container must hold the key the link is signed with.
        self.prepare().await?;
        let held = self.session(None).await?;
        let name = self.account.object_name(object);
        Ok(Some(key.sign_get(
            &self.account,
            &held.session.storage_url,
            &name,
            expires,
        )))
    }

    /// Starts an upload of image object `object`.
    pub fn writer(self: &Arc<Self>, object: &str) -> Result<SwiftWriter, StoreError> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| StoreError(format!("no randomness: {e}")))?;
        let name = self.account.object_name(object);
        Ok(SwiftWriter {
            store: Arc::clone(self),
            upload_dir: format!("{}{}/", segment_dir(&name), hex::encode(id)),
            name,
            buf: BytesMut::new(),
            segments: Vec::new(),
            current: None,
            finished: false,
        })
    }
}

/// The `Response Status` of a bulk answer (a manifest's PUT or DELETE with
/// JSON output): an error when the body cannot be read or holds none.
async fn response_status(resp: reqwest::Response, what: &str) -> Result<String, StoreError> {
    let text = resp
        .text()
        .await
        .map_err(|e| StoreError(format!("{what}: reading Swift's answer: {e}")))?;
    serde_json::from_str::<serde_json::Value>(text.trim())
        .ok()
        .and_then(|v| v.get("Response Status")?.as_str().map(str::to_owned))
        .ok_or_else(|| {
            let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            StoreError(format!("{what}: Swift's answer has no status: {text}"))
        })
}

/// Where the segments of object `name` go: `{name}.segments/`, then one
/// directory per upload.
fn segment_dir(name: &str) -> String {
    format!("{name}.segments/")
}

/// A segment stored.
#[derive(serde::Serialize)]
struct Segment {
    /// `/container/name`, as the manifest names it.
    path: String,
    etag: String,
    size_bytes: u64,
}

/// A segment being streamed.
struct SegmentPut {
    name: String,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<Result<String, StoreError>>,
    /// The md5 of what was sent, to compare with the ETag Swift answers.
    md5: md5::Md5,
    size: u64,
    limit: u64,
}

/// A Swift upload: buffered up to 16 MiB, else segments
/// streamed one after another and a manifest at commit.
pub struct SwiftWriter {
    store: Arc<SwiftStore>,
    name: String,
    upload_dir: String,
    buf: BytesMut,
    segments: Vec<Segment>,
    current: Option<SegmentPut>,
    finished: bool,
}

impl Drop for SwiftWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let names = self.written();
        if let Some(put) = self.current.take() {
            put.task.abort();
        }
        if !names.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let store = Arc::clone(&self.store);
            rt.spawn(async move { remove(&store, names).await });
        }
    }
}

/// Deletes the segments `names` of an upload that did not complete.
async fn remove(store: &SwiftStore, names: Vec<String>) {
    for name in names {
        if let Err(e) = store.delete_one(&format!("/{name}")).await {
            tracing::warn!(segment = name, error = %e, "cannot remove a segment of a failed upload");
        }
    }
}

impl SwiftWriter {
    /// The names of the segments written or being written.
    fn written(&self) -> Vec<String> {
        let container = self.store.account.container();
        let stored = self.segments.iter().map(|s| {
            s.path
                .strip_prefix(&format!("/{container}/"))
                .unwrap_or(&s.path)
                .to_owned()
        });
        stored
            .chain(self.current.as_ref().map(|p| p.name.clone()))
            .collect()
    }

    /// Appends `chunk`.
    pub(super) async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.current.is_none() && self.segments.is_empty() {
            if self.buf.len() + chunk.len() <= SINGLE_PUT_MAX {
                self.buf.extend_from_slice(&chunk);
                return Ok(());
            }
            let first = std::mem::take(&mut self.buf).freeze();
            self.feed(first).await?;
        }
        self.feed(chunk).await
    }

    /// Sends `data` into the segments, starting and finishing them as they fill.
    async fn feed(&mut self, mut data: Bytes) -> Result<(), StoreError> {
        while !data.is_empty() {
            let put = match &mut self.current {
                Some(put) => put,
                None => {
                    let put = self.start_segment().await?;
                    self.current.insert(put)
                }
            };
            let room = usize::try_from(put.limit - put.size).unwrap_or(usize::MAX);
            let piece = data.split_to(room.min(data.len()));
            put.size += piece.len() as u64;
            let full = put.size == put.limit;
            // Hashed on the blocking pool while it is sent.
            let mut md5 = std::mem::take(&mut put.md5);
            let hashed = piece.clone();
            let hashing = tokio::task::spawn_blocking(move || {
                md5.update(&hashed);
                md5
            });
            let sent = put.tx.send(piece).await;
            put.md5 = hashing
                .await
                .map_err(|e| StoreError(format!("segment hashing task: {e}")))?;
            if sent.is_err() {
                // The PUT ended before its body: its answer says why.
                self.finish_segment().await?;
                return Err(StoreError("Swift ended a segment's upload early".into()));
            }
            if full {
                self.finish_segment().await?;
            }
        }
        Ok(())
    }

    async fn start_segment(&mut self) -> Result<SegmentPut, StoreError> {
        let index = self.segments.len();
        if index >= MAX_SEGMENTS {
            return Err(StoreError(format!(
                "the image needs more than {MAX_SEGMENTS} segments"
            )));
        }
        self.store.prepare().await?;
        let name = format!("{}{:05}", self.upload_dir, index + 1);
        let (tx, rx) = tokio::sync::mpsc::channel(SEGMENT_QUEUE);
        let store = Arc::clone(&self.store);
        let target = name.clone();
        let task = tokio::spawn(async move { store.put_stream(&target, rx).await });
        Ok(SegmentPut {
            name,
            tx,
            task,
            md5: md5::Md5::default(),
            size: 0,
            limit: segment_bytes(self.store.segment_bytes, index),
        })
    }

    /// Ends the body of the segment in flight and keeps its ETag.
    async fn finish_segment(&mut self) -> Result<(), StoreError> {
        let Some(put) = self.current.take() else {
            return Ok(());
        };
        drop(put.tx);
        let stored = match put.task.await {
            Ok(r) => r,
            Err(e) => Err(StoreError(format!("segment upload task: {e}"))),
        };
        let container = self.store.account.container();
        let sent = hex::encode(put.md5.finalize());
        let stored = stored.and_then(|etag| match etag.eq_ignore_ascii_case(&sent) {
            true => Ok(etag),
            false => Err(StoreError(format!(
                "segment {}: Swift stored md5 {etag}, glance-api sent {sent}",
                put.name
            ))),
        });
        match stored {
            Ok(etag) => {
                self.segments.push(Segment {
                    path: format!("/{container}/{}", put.name),
                    etag,
                    size_bytes: put.size,
                });
                Ok(())
            }
            Err(e) => {
                // It may have landed in part: remove it with the rest.
                self.segments.push(Segment {
                    path: format!("/{container}/{}", put.name),
                    etag: String::new(),
                    size_bytes: 0,
                });
                Err(e)
            }
        }
    }

    /// Stores the object: one PUT, or the last segment and the manifest.
    /// On failure nothing of the upload is left.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        if self.segments.is_empty() && self.current.is_none() {
            let body = std::mem::take(&mut self.buf).freeze();
            let result = match self.store.prepare().await {
                Ok(()) => self.store.put_whole(&self.name, body).await,
                Err(e) => Err(e),
            };
            self.finished = true;
            return result;
        }
        let result = async {
            self.finish_segment().await?;
            let manifest = serde_json::to_vec(&self.segments)
                .map_err(|e| StoreError(format!("manifest: {e}")))?;
            // Swift checks every segment before it answers; with heartbeat
            // it answers 202 at once, keeps the connection alive with
            // whitespace and puts the outcome at the end of the body.
            let what = format!("PUT the manifest of {}", self.name);
            let resp = self
                .store
                .call_within(
                    MANIFEST_TIMEOUT,
                    Method::PUT,
                    &format!("/{}?multipart-manifest=put&heartbeat=on", self.name),
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Accept", "application/json"),
                    ],
                    Some(Bytes::from(manifest)),
                )
                .await?;
            match resp.status() {
                StatusCode::CREATED => Ok(()),
                StatusCode::ACCEPTED => {
                    let outcome = response_status(resp, &what).await?;
                    match outcome.starts_with("201") {
                        true => Ok(()),
                        false => Err(StoreError(format!("{what}: Swift answered {outcome}"))),
                    }
                }
                _ => Err(refusal(&what, resp).await),
            }
        }
        .await;
        if result.is_err() {
            // The manifest too, should it have landed after all.
            let mut names = self.written();
            names.push(self.name.clone());
            remove(&self.store, names).await;
        }
        self.finished = true;
        result
    }

    /// Throws away what the upload wrote.
    pub(super) async fn abort(mut self) {
        self.finished = true;
        let names = self.written();
        if let Some(put) = self.current.take() {
            put.task.abort();
            let _ = put.task.await;
        }
        remove(&self.store, names).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_grow_so_a_thousand_hold_more_than_the_default_cap() {
        let base = DEFAULT_SEGMENT_BYTES;
        assert_eq!(segment_bytes(base, 0), 200 << 20);
        assert_eq!(segment_bytes(base, 199), 200 << 20);
        assert_eq!(segment_bytes(base, 200), 400 << 20);
        assert_eq!(segment_bytes(base, 999), 3200 << 20);
        assert_eq!(max_object(base), 200 * (200 << 20) * 31);
        assert_eq!(segment_dir("p/abc"), "p/abc.segments/");
    }
}
