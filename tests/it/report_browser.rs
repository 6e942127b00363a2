//! The force's HTML report, opened in a real headless browser (Debian's Chromium).

use crate::common::{TestBucket, missing};

#[tokio::test]
async fn the_report_renders_in_chromium_with_the_decision_and_escaped_values() {
    let chromium = std::env::var_os("FORCE_RETURNS_TEST_CHROMIUM")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| missing("chromium (FORCE_RETURNS_TEST_CHROMIUM)"));
    let bucket = TestBucket::new();
    let header = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing";
    let row = |eth: &str| {
        format!(
            "Person search,2020-01-03T10:00:00+00:00,False,,53.4,-1.4,Male,18-24,{eth},White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,True,False"
        )
    };
    let csv = format!(
        "{header}\n{}\n{}\n",
        row("\"<img src=x onerror=document.title='pwned'>\""),
        row("W1")
    );
    bucket
        .upload(
            "incoming/merseyside/stop_search/2020-01/m.csv",
            csv.into_bytes(),
        )
        .await;
    let out = bucket.run().await;
    let html_key = out.processed[0].outputs.report_html.clone().unwrap();
    let page = bucket.local_dir().await.join(&html_key);
    let profile = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=2000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(dom.contains("Merseyside Police"), "{dom}");
    assert!(
        dom.to_lowercase().contains("rejected"),
        "the decision is shown"
    );
    assert!(dom.contains("value_not_in_list"));
    assert!(
        !dom.contains("<img src=\"x\""),
        "a value from the upload became markup"
    );
    assert!(dom.contains("&lt;img src=x"), "the value is shown, escaped");
    assert!(!dom.contains("<title>pwned</title>"), "script ran");
}
