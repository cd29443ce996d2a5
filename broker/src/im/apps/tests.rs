//! Unit tests of the app records: name widths, field checks, visibility, keys.

use super::*;

#[test]
fn names_count_two_latin_letters_as_one_character() {
    assert_eq!(name_width("审批"), 2.0);
    assert_eq!(name_width("OA"), 1.0);
    assert_eq!(name_width("OA审批"), 3.0);
    assert!(
        check_fields(&AppFields {
            name: Some("A".into()),
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        check_fields(&AppFields {
            name: Some("Expenses".into()),
            ..Default::default()
        })
        .is_ok()
    );
    assert!(
        check_fields(&AppFields {
            name: Some("费用报销审批流程管理中心系统".into()),
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        check_fields(&AppFields {
            identifier: Some("oa1".into()),
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn visibility_modes() {
    let mut a = AppRecord {
        tenant: 0,
        ..AppRecord::default()
    };
    assert!(a.visible_to(7, "u", &[]));
    a.visibility = Visibility {
        mode: "all_but".into(),
        tenants: vec![7],
        ..Default::default()
    };
    assert!(!a.visible_to(7, "u", &[]) && a.visible_to(8, "u", &[]));
    a.visibility = Visibility {
        mode: "only".into(),
        users: vec!["u".into()],
        departments: vec![3],
        ..Default::default()
    };
    assert!(a.visible_to(7, "u", &[]) && a.visible_to(7, "v", &[3]) && !a.visible_to(7, "v", &[4]));
    a.tenant = 9;
    assert!(!a.visible_to(7, "u", &[]), "another tenant's own app");
}

#[test]
fn aes_keys_are_43_characters_of_32_bytes() {
    let k = new_aes_key().expect("key");
    assert_eq!(k.len(), 43);
}
