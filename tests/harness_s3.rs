//! The S3 server the tests rely on behaves like S3 where delta-rs depends on it: a signed
//! conditional put (`If-None-Match: *`, object_store's `PutMode::Create`) fails on an
//! existing key and succeeds on a new one.

mod support;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

#[test]
fn moto_honours_conditional_put() {
    let s3 = support::S3Server::start();
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
