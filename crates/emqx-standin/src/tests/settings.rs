//! Settings and formatting.

use super::*;

#[test]
fn expire_is_written_in_the_zone_without_suffix() {
    let expire = OffsetDateTime::parse(
        "2034-05-22T02:43:21Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let mut settings = Settings::default();
    assert_eq!(format_expire(expire, &settings), "2034-05-22 02:43:21");
    settings.zone = parse_zone("+08:00").unwrap();
    assert_eq!(format_expire(expire, &settings), "2034-05-22 10:43:21");
    settings.zone = parse_zone("-05:30").unwrap();
    assert_eq!(format_expire(expire, &settings), "2034-05-21 21:13:21");
    assert_eq!(format_zone(settings.zone), "-05:30");
    assert!(parse_zone("UTC+8").is_err());
}

#[test]
fn settings_patch_is_all_or_nothing_and_strict() {
    let mut settings = Settings::default();
    let patch: SettingsPatch =
        serde_json::from_value(json!({ "get_limit": 3, "zone": "bad" })).unwrap();
    assert!(settings.apply(patch).is_err());
    assert_eq!(settings, Settings::default());
    let patch: SettingsPatch =
        serde_json::from_value(json!({ "get_limit": 3, "zone": "+02:00" })).unwrap();
    settings.apply(patch).unwrap();
    assert_eq!(settings.get_limit, 3);
    assert_eq!(
        serde_json::to_value(&settings).unwrap()["zone"],
        json!("+02:00")
    );
    assert!(serde_json::from_value::<SettingsPatch>(json!({ "nope": 1 })).is_err());
}
