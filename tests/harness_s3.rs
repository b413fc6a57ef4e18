//! The S3 server the tests rely on behaves like S3 where delta-rs depends on it: a
//! conditional put (`If-None-Match: *`, object_store's `PutMode::Create`) fails with 412 on
//! an existing key, leaves the first body in place, and succeeds on a new key. Checked
//! once in raw HTTP (so the harness itself is tested) and once through object_store, signed.

mod support;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

#[test]
fn raw_put_get_and_if_none_match() {
    let s3 = support::s3::S3Server::start();
    s3.create_bucket("tables");
    let key = "/tables/_delta_log/00000000000000000000.json";
    assert_eq!(s3.request("PUT", key, &[], b"one").0, 200, "{}", s3.log_tail());
    assert_eq!(s3.request("GET", key, &[], b""), (200, "one".to_string()));
    let (code, body) = s3.request("PUT", key, &[("If-None-Match", "*")], b"two");
    assert_eq!(code, 412, "second create of {key}: {body}");
    assert!(body.contains("PreconditionFailed"), "{body}");
    assert_eq!(
        s3.request("GET", key, &[], b"").1,
        "one",
        "the losing put must not overwrite"
    );
    let other = "/tables/_delta_log/00000000000000000001.json";
    assert_eq!(s3.request("PUT", other, &[("If-None-Match", "*")], b"x").0, 200);
}

#[test]
fn moto_honours_conditional_put() {
    let s3 = support::s3::S3Server::start();
    s3.create_bucket("tables");
    let mut b = AmazonS3Builder::new().with_bucket_name("tables");
    for (k, v) in s3.storage_options() {
        b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    let store = b.build().unwrap();
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    pinpipe::block_on(async {
        let key = Path::from("_delta_log/00000000000000000000.json");
        store.put_opts(&key, "one".into(), create()).await.unwrap();
        let err = store.put_opts(&key, "two".into(), create()).await.unwrap_err();
        assert!(matches!(err, object_store::Error::AlreadyExists { .. }), "{err}");
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"one", "the losing put must not overwrite");
        store
            .put_opts(
                &Path::from("_delta_log/00000000000000000001.json"),
                "x".into(),
                create(),
            )
            .await
            .unwrap();
    });
}
