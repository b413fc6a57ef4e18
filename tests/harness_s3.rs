//! The S3 server the tests rely on behaves like S3 where delta-rs depends on it.

mod support;

#[test]
fn moto_honours_conditional_put() {
    let s3 = support::S3Server::start();
    s3.create_bucket("tables");
    let (code, _) = support::http(s3.port, "PUT", "/tables/k", &[], b"one").unwrap();
    assert_eq!(code, 200);
    // delta-rs commits with If-None-Match: * and relies on a 412 for an existing key...
    let (code, _) = support::http(s3.port, "PUT", "/tables/k", &[("If-None-Match", "*")], b"two").unwrap();
    assert_eq!(code, 412);
    // ...and a 200 for a new one.
    let (code, _) = support::http(s3.port, "PUT", "/tables/k2", &[("If-None-Match", "*")], b"two").unwrap();
    assert_eq!(code, 200);
}
