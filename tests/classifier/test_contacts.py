"""classifier.contacts: contact details found (and not invented), with spans into the text given."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier import contacts as contacts_mod
from classifier import model as model_mod
from classifier.contacts import Contact, contact_features, extract_contacts
from classifier.normalize import Normalizer

# (reason, text, expected (kind, value, the text at the reported span))
POSITIVES = [
    ("phone_plain", "电话13812345678", [("phone", "13812345678", "13812345678")]),
    ("phone_dashes", "手机 138-1234-5678 随时打", [("phone", "13812345678", "138-1234-5678")]),
    ("phone_spaces", "打138 1234 5678", [("phone", "13812345678", "138 1234 5678")]),
    ("phone_plus86", "+86 199 8765 4321", [("phone", "19987654321", "+86 199 8765 4321")]),
    ("phone_fullwidth", "电话１３８１２３４５６７８", [("phone", "13812345678", "１３８１２３４５６７８")]),
    ("qq_plain", "qq 123456", [("qq", "123456", "123456")]),
    ("qq_colon", "qq:87654321 备注来意", [("qq", "87654321", "87654321")]),
    ("qq_koukou", "扣扣：12345678", [("qq", "12345678", "12345678")]),
    ("qq_penguin", "企鹅号 55667788", [("qq", "55667788", "55667788")]),
    ("qq_group", "qq群 123456789", [("qq", "123456789", "123456789")]),
    ("qq_q", "加q 1234567", [("qq", "1234567", "1234567")]),
    ("wechat_id", "微信:abc_123", [("wechat", "abc_123", "abc_123")]),
    ("wechat_vx", "vx kefu888 备注", [("wechat", "kefu888", "kefu888")]),
    ("wechat_upper", "VX：Lele_520", [("wechat", "lele_520", "Lele_520")]),
    ("wechat_variant_original", "薇信 xiaomei66", [("wechat", "xiaomei66", "xiaomei66")]),
    ("wechat_wxid", "wxid_a1b2c3d4 加我", [("wechat", "wxid_a1b2c3d4", "wxid_a1b2c3d4")]),
    (
        "wechat_phone",
        "微信13812345678",
        [("phone", "13812345678", "13812345678"), ("wechat", "13812345678", "13812345678")],
    ),
    ("telegram_at", "联系@kefu_88", [("telegram", "@kefu_88", "@kefu_88")]),
    ("telegram_tme", "进群 t.me/abcdef", [("telegram", "t.me/abcdef", "t.me/abcdef")]),
    (
        "telegram_https_joinchat",
        "点击 https://t.me/joinchat/AbCdEf12。",
        [("telegram", "t.me/joinchat/abcdef12", "https://t.me/joinchat/AbCdEf12")],
    ),
    ("telegram_telegram_me", "telegram.me/kefu_bot", [("telegram", "t.me/kefu_bot", "telegram.me/kefu_bot")]),
    ("telegram_cue", "电报:kefu888", [("telegram", "@kefu888", "kefu888")]),
    ("telegram_cue_at", "飞机 @kefu888", [("telegram", "@kefu888", "@kefu888")]),
    ("telegram_plane_colon", "飞机:kefu888", [("telegram", "@kefu888", "kefu888")]),
    (
        "url_https",
        "看这里 https://example.com/a?b=1 谢谢",
        [("url", "https://example.com/a?b=1", "https://example.com/a?b=1")],
    ),
    ("url_bare_path", "访问 abc.com/xyz 看看", [("url", "abc.com/xyz", "abc.com/xyz")]),
    ("url_bare", "官网 www.bet365.vip", [("url", "www.bet365.vip", "www.bet365.vip")]),
    ("url_short", "短链 bit.ly/3abcD", [("url", "bit.ly/3abcd", "bit.ly/3abcD")]),
    ("url_trailing_dot", "网址是abc123.top.", [("url", "abc123.top", "abc123.top")]),
]

# (reason, text with no contact in it)
NEGATIVES = [
    ("price", "价格300元一位"),
    ("price_big", "月入30000元不是梦"),
    ("date_dash", "2023-10-12 开会"),
    ("date_compact", "日期20231012"),
    ("time", "13:45到"),
    ("order_number", "订单号 202310121234567"),
    ("too_long_digits", "13812345678901"),
    ("landline_short", "电话 12345"),
    ("qq_no_cue", "号码 123456"),
    ("discount", "打3.5折"),
    ("email", "邮箱 test@gmail.com"),
    ("short_handle", "@abc 你好"),
    ("version", "版本v2.1"),
    ("wechat_too_short", "微信:abc"),
    ("threat", "他威胁我"),
    ("plain_chat", "今天天气不错,我们去公园散步吧"),
    ("flight_number", "明天坐飞机 ca1234 去北京"),
    ("given_name", "赵薇 abcdefg 的电影"),
]


def spans(text: str) -> list[tuple[str, str, str]]:
    return [(c.kind, c.value, text[c.start : c.end]) for c in extract_contacts(text)]


@pytest.mark.parametrize(("reason", "text", "expected"), POSITIVES, ids=[r[0] for r in POSITIVES])
def test_contacts_found(reason: str, text: str, expected: list[tuple[str, str, str]]) -> None:
    assert spans(text) == expected, reason


@pytest.mark.parametrize(("reason", "text"), NEGATIVES, ids=[r[0] for r in NEGATIVES])
def test_no_contact_invented(reason: str, text: str) -> None:
    assert extract_contacts(text) == [], reason


def test_normalized_text_and_back_to_original() -> None:
    n = Normalizer()
    original = "加 ＶＸ：ｋｅｆｕ８８８，电话一三八一二三四五六七八"
    r = n.normalize(original)
    found = {c.kind: c for c in extract_contacts(r.text)}
    assert found["wechat"].value == "kefu888"
    assert found["phone"].value == "13812345678"
    s, e = r.to_original(found["wechat"].start, found["wechat"].end)
    assert original[s:e] == "ｋｅｆｕ８８８"
    s, e = r.to_original(found["phone"].start, found["phone"].end)
    assert original[s:e] == "一三八一二三四五六七八"


def test_evasive_cues_found_after_normalizing() -> None:
    n = Normalizer()
    for text, kind in [("薇：kefu888", "wechat"), ("扣扣 12345678", "qq"), ("✈️ @kefu888", "telegram")]:
        assert kind in {c.kind for c in extract_contacts(n.normalize(text).text)}, text


def test_contact_features() -> None:
    contacts = [Contact("phone", "13812345678", 0, 11), Contact("url", "abc.com", 12, 19)]
    assert contact_features(contacts) == ["__contact_phone__", "__contact_url__", "__contact_multi__"]
    assert contact_features([Contact("qq", "123456", 0, 6)]) == ["__contact_qq__"]
    assert contact_features([]) == []


def test_contacts_ordered_by_position() -> None:
    found = extract_contacts("qq 123456 或者 @kefu_888 或者 abc.com")
    assert [c.kind for c in found] == ["qq", "telegram", "url"]
    assert [c.start for c in found] == sorted(c.start for c in found)


@settings(max_examples=300)
@given(st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from("qQ微信vx电报@.:-1386 "))))
def test_property_never_raises_spans_valid(text: str) -> None:
    for c in extract_contacts(text):
        assert 0 <= c.start < c.end <= len(text)
        assert c.kind in {"phone", "qq", "wechat", "telegram", "url"}


def test_long_input() -> None:
    text = "加微信 kefu888 电话13812345678 " * 4000
    found = extract_contacts(text)
    assert len(found) == 2 * 4000  # each repeat: one wechat id, one phone


PIECES = [
    "wxid_",
    "t.me/",
    "扣扣",
    "企鹅",
    "绿泡泡",
    "电报",
    "飞机",
    "https://",
    "13812345678",
    "ı",
    "İ",
    "ſ",
]
CONTACTISH = st.lists(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from("qQ微信薇威徽vVwWx@.:/-+1386１３８ _"),
        st.sampled_from(PIECES),
    ),
    max_size=24,
).map("".join)


def _gate_holds(text: str) -> None:
    for pattern, gate in contacts_mod._GATES.items():
        if pattern.search(text) is not None:
            assert gate.search(text) is not None, (pattern.pattern[:40], text)
    # the classifier skips extract_contacts where its one gate does not occur
    if extract_contacts(text):
        assert model_mod._MAYBE_CONTACT.search(text) is not None, text


@pytest.mark.parametrize(("reason", "text", "expected"), POSITIVES, ids=[r[0] for r in POSITIVES])
def test_gates_pass_every_positive(reason: str, text: str, expected: list[tuple[str, str, str]]) -> None:
    """A pattern runs only when its gate occurs: the gate must occur wherever the pattern matches."""
    _gate_holds(text)
    _gate_holds(Normalizer().normalize(text).text)


@settings(max_examples=500)
@given(CONTACTISH)
def test_property_gates_are_necessary(text: str) -> None:
    _gate_holds(text)


@settings(max_examples=1000)
@given(st.text(alphabet="aZq9１.:/_-@ 微信号vx电报t", max_size=16))
def test_property_gates_are_necessary_near_misses(text: str) -> None:
    """Short ids, bare dots and lone letters: where a gate's alternatives almost occur."""
    _gate_holds(text)
