#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cqrs_testkit::TestRedis;
use redis::AsyncCommands;

#[tokio::test]
async fn namespace_is_unique_and_cleaned_on_drop() {
    let a = TestRedis::new().await;
    let b = TestRedis::new().await;
    assert_ne!(a.namespace, b.namespace);
    assert!(a.namespace.starts_with("t-") && a.namespace.ends_with(':'));
    assert_eq!(a.key("x"), format!("{}x", a.namespace));

    let mut conn = a.conn.clone();
    for i in 0..1500 {
        let _: () = conn.set(a.key(&format!("k{i}")), i).await.unwrap();
    }
    let _: () = conn.set(b.key("kept"), "1").await.unwrap();
    assert_eq!(a.keys().await.len(), 1500);
    assert_eq!(b.keys().await, vec![b.key("kept")]);

    let namespace_a = a.namespace.clone();
    drop(a);
    let mut conn = b.conn.clone();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace_a}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{} keys left after drop", left.len());
    assert_eq!(b.keys().await, vec![b.key("kept")]);

    let namespace = b.namespace.clone();
    drop(b);
    let exists: bool = conn.exists(format!("{namespace}kept")).await.unwrap();
    assert!(!exists);
}
