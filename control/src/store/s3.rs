//! S3 stores: an upload is a single PUT under one part, else a multipart
//! upload with one part in flight while the next is received.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rusty_s3::S3Action as _;

use super::StoreError;

/// How long a presigned request glance-api makes itself stays valid.
const OWN_REQUEST_VALIDITY: Duration = Duration::from_secs(3600);

/// The first parts of a multipart upload; every [`PARTS_PER_SIZE`] parts
/// the size doubles (up to 64x), so S3's 10,000-part limit allows
/// [`MAX_S3_OBJECT`] (about 1.9 TiB) while small images use little memory.
const FIRST_PART_BYTES: usize = 16 << 20;

/// Parts of each size.
const PARTS_PER_SIZE: usize = 1600;

/// The most doublings of the part size.
const MAX_DOUBLINGS: usize = 6;

/// S3's limit on parts per upload.
const MAX_PARTS: u16 = 10_000;

/// The size of part `index` (counting from 0).
const fn part_bytes(index: usize) -> usize {
    let band = index / PARTS_PER_SIZE;
    FIRST_PART_BYTES
        << if band < MAX_DOUBLINGS {
            band
        } else {
            MAX_DOUBLINGS
        }
}

// The default image_size_cap (1 TiB) fits, and no part passes S3's 5 GiB.
const _: () = assert!(MAX_S3_OBJECT > 1 << 40 && part_bytes(9_999) <= 5 << 30);

/// The largest object an S3 upload can make: the sum of all 10,000 parts.
pub const MAX_S3_OBJECT: u64 = {
    let mut total = 0u64;
    let mut i = 0;
    while i < MAX_PARTS as usize {
        total += part_bytes(i) as u64;
        i += 1;
    }
    total
};

/// An S3 bucket glance-api writes images to (the secret never in `Debug`).
#[derive(Clone, Debug)]
pub struct S3Store {
    bucket: glance_link::s3::S3Bucket,
    http: reqwest::Client,
}

impl S3Store {
    /// A store writing to `bucket`.
    pub fn new(
        bucket: glance_link::s3::S3Bucket,
        roots: &crate::tls::Roots,
    ) -> Result<S3Store, String> {
        let http = roots
            .client()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the S3 client: {e}"))?;
        Ok(S3Store { bucket, http })
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        self.bucket.bucket().name()
    }

    /// The key of image `object` (the prefix, then the name).
    pub fn key(&self, object: &str) -> String {
        self.bucket.key(object)
    }

    /// A presigned GET of `object`, valid for `ttl`: the direct link.
    pub fn presigned_get(&self, object: &str, ttl: Duration) -> String {
        self.bucket.presigned_get(object, ttl).to_string()
    }

    /// Reads the object of image `object`, allowing `timeout` for all of it.
    pub async fn read(
        &self,
        object: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, StoreError> {
        let url = self.bucket.presigned_get(object, Duration::from_secs(3600));
        let resp = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| StoreError(format!("GET {object}: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(StoreError(format!(
                "GET {object}: S3 answered {}",
                resp.status()
            )));
        }
        Ok(resp)
    }

    /// Sends one presigned request; the response if it is a 2xx.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, StoreError> {
        let what = format!("{method} {}", url.path());
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            // Stated even when 0: hyper leaves it out of an empty PUT, and
            // S3 answers 411 without it.
            req = req
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(body);
        }
        // Without the URL: its query is a signature valid for an hour.
        let resp = req
            .send()
            .await
            .map_err(|e| StoreError(format!("{what}: {}", e.without_url())))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let code = text
            .split("<Code>")
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap_or("");
        Err(StoreError(format!("{what}: S3 answered {status} {code}")))
    }

    async fn put_whole(&self, object: &str, body: Bytes) -> Result<(), StoreError> {
        let key = self.bucket.key(object);
        let url = self
            .bucket
            .bucket()
            .put_object(Some(self.bucket.credentials()), &key)
            .sign(OWN_REQUEST_VALIDITY);
        self.send(reqwest::Method::PUT, url, Some(body))
            .await
            .map(drop)
    }

    async fn create_upload(&self, object: &str) -> Result<String, StoreError> {
        let key = self.bucket.key(object);
        let url = self
            .bucket
            .bucket()
            .create_multipart_upload(Some(self.bucket.credentials()), &key)
            .sign(OWN_REQUEST_VALIDITY);
        let resp = self.send(reqwest::Method::POST, url, None).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| StoreError(format!("create multipart upload: {e}")))?;
        rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map(|r| r.upload_id().to_owned())
            .map_err(|e| StoreError(format!("create multipart upload: {e}")))
    }

    async fn upload_part(
        &self,
        object: &str,
        upload_id: &str,
        number: u16,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let key = self.bucket.key(object);
        let url = self
            .bucket
            .bucket()
            .upload_part(Some(self.bucket.credentials()), &key, number, upload_id)
            .sign(OWN_REQUEST_VALIDITY);
        let resp = self.send(reqwest::Method::PUT, url, Some(body)).await?;
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| StoreError(format!("part {number}: S3 sent no ETag")))
    }

    async fn complete(
        &self,
        object: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), StoreError> {
        let key = self.bucket.key(object);
        let action = self.bucket.bucket().complete_multipart_upload(
            Some(self.bucket.credentials()),
            &key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(OWN_REQUEST_VALIDITY);
        let body = action.body();
        let resp = self
            .send(reqwest::Method::POST, url, Some(Bytes::from(body)))
            .await?;
        // S3 may answer 200 and put the error in the body.
        let text = resp.text().await.unwrap_or_default();
        if text.contains("<Error>") {
            return Err(StoreError(format!(
                "complete multipart upload: S3 answered an error: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        Ok(())
    }

    async fn abort(&self, object: &str, upload_id: &str) {
        let key = self.bucket.key(object);
        let url = self
            .bucket
            .bucket()
            .abort_multipart_upload(Some(self.bucket.credentials()), &key, upload_id)
            .sign(OWN_REQUEST_VALIDITY);
        if let Err(e) = self.send(reqwest::Method::DELETE, url, None).await {
            tracing::warn!(object, error = %e, "cannot abort a multipart upload");
        }
    }

    pub(super) async fn delete(&self, object: &str) -> Result<(), StoreError> {
        let key = self.bucket.key(object);
        let url = self
            .bucket
            .bucket()
            .delete_object(Some(self.bucket.credentials()), &key)
            .sign(OWN_REQUEST_VALIDITY);
        // S3 answers 204 whether or not the object was there.
        self.send(reqwest::Method::DELETE, url, None)
            .await
            .map(drop)
    }
}

/// An S3 upload: a single PUT for an image under one part, else a
/// multipart upload with one part in flight while the next fills.
pub struct S3Writer {
    s3: Arc<S3Store>,
    object: String,
    buf: BytesMut,
    upload_id: Option<String>,
    etags: Vec<String>,
    in_flight: Option<tokio::task::JoinHandle<Result<String, StoreError>>>,
    finished: bool,
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        if let (Some(id), Ok(rt)) = (self.upload_id.take(), tokio::runtime::Handle::try_current()) {
            let (s3, object) = (Arc::clone(&self.s3), self.object.clone());
            rt.spawn(async move { s3.abort(&object, &id).await });
        }
    }
}

impl S3Writer {
    /// A new upload of image object `object`.
    pub(super) fn new(s3: Arc<S3Store>, object: &str) -> S3Writer {
        S3Writer {
            s3,
            object: object.to_owned(),
            buf: BytesMut::new(),
            upload_id: None,
            etags: Vec::new(),
            in_flight: None,
            finished: false,
        }
    }

    /// Appends `chunk`, sending every part that fills.
    pub(super) async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.buf.extend_from_slice(chunk);
        while self.buf.len() >= self.part_bytes() {
            let n = self.part_bytes();
            let part = self.buf.split_to(n).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Sends the rest and completes the upload (aborting it on failure).
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buf).freeze();
        let Some(upload_id) = self.upload_id.clone() else {
            self.s3.put_whole(&self.object, rest).await?;
            self.finished = true;
            return Ok(());
        };
        let result = async {
            if !rest.is_empty() {
                self.send_part(rest).await?;
            }
            self.settle().await?;
            self.s3
                .complete(&self.object, &upload_id, &self.etags)
                .await
        }
        .await;
        // Done either way: completed, or aborted here.
        self.finished = true;
        if result.is_err() {
            self.s3.abort(&self.object, &upload_id).await;
        }
        result
    }

    /// Aborts the multipart upload, if one was started.
    pub(super) async fn abort(mut self) {
        self.finished = true;
        if let Some(task) = self.in_flight.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(id) = self.upload_id.take() {
            self.s3.abort(&self.object, &id).await;
        }
    }

    /// The size of the part being filled now.
    fn part_bytes(&self) -> usize {
        part_bytes(self.etags.len() + usize::from(self.in_flight.is_some()))
    }

    /// Waits for the part in flight, keeping its ETag.
    async fn settle(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.in_flight.take() {
            let etag = task
                .await
                .map_err(|e| StoreError(format!("part upload task: {e}")))??;
            self.etags.push(etag);
        }
        Ok(())
    }

    /// Sends `part` as the next part (after the one in flight lands).
    async fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.s3.create_upload(&self.object).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        self.settle().await?;
        let number = u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|n| *n <= MAX_PARTS)
            .ok_or_else(|| StoreError("the image needs more than 10,000 parts".into()))?;
        let s3 = Arc::clone(&self.s3);
        let object = self.object.clone();
        self.in_flight = Some(tokio::spawn(async move {
            s3.upload_part(&object, &upload_id, number, part).await
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_ten_thousand_hold_more_than_the_default_cap() {
        assert_eq!(part_bytes(0), 16 << 20);
        assert_eq!(part_bytes(1599), 16 << 20);
        assert_eq!(part_bytes(1600), 32 << 20);
        assert_eq!(part_bytes(9999), 1 << 30);
    }
}
