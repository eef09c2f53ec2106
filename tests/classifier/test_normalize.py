"""classifier.normalize: evasions folded, ordinary text kept, offsets map back, never raises."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.normalize import Normalized, Normalizer

LEXICON = ["冰毒", "摇头丸", "刷单", "大麻", "海洛因", "跑分", "K粉", "网贷"]


@pytest.fixture(scope="module")
def norm() -> Normalizer:
    return Normalizer(lexicon=LEXICON)


# (reason, original, normalized text)
EVASIONS = [
    ("space", "出冰 毒，量大从优", "出冰毒,量大从优"),
    ("dots", "冰.毒现货", "冰毒现货"),
    ("dot_spaced", "冰 . 毒现货", "冰毒现货"),
    ("stars", "冰*毒*到货", "冰毒到货"),
    ("dash", "刷-单日结", "刷单日结"),
    ("underscore", "刷_单日结", "刷单日结"),
    ("slash", "刷/单日结", "刷单日结"),
    ("pipe", "刷|单日结", "刷单日结"),
    ("ellipsis", "冰…毒", "冰毒"),
    ("mixed_run", "跑 ~ * 分 平台", "跑分平台"),
    ("zwnj", "刷\u200c单兼职", "刷单兼职"),
    ("zwsp", "冰\u200b毒", "冰毒"),
    ("bom_and_zwj", "\ufeff刷\u200d单", "刷单"),
    ("combining_strike", "冰\u0336毒\u0336", "冰毒"),
    ("fullwidth", "ＶＸ：ＡＢＣ１２３４５", "微信:abc12345"),
    ("traditional", "冰毒販賣，貨到付款", "冰毒贩卖,货到付款"),
    ("circled_digits", "电话①③⑧①②③④⑤⑥⑦⑧", "电话13812345678"),
    ("dingbat_digits", "电话❶❸➑①②③④⑤⑥⑦⑧", "电话13812345678"),
    ("negative_circled_in_domain", "看片:❾➊aa.cc", "看片:91aa.cc"),
    ("negative_circled_ten", "一小时❿块", "一小时10块"),
    ("negative_styled_letters", "官网🅣🅞🅟.cc 和 T🅾🅿.vip", "官网top.cc 和 top.vip"),
    ("pinyin_tone_marks", "有bīng dú要的来", "有冰毒要的来"),
    ("accented_letters_in_domain", "官网Miáòzań。ⅭòM", "官网miaozan.com"),
    ("greek_lookalikes_in_domain", "看片:90aaνν.cc", "看片:90aavv.cc"),
    ("cyrillic_lookalikes", "官网 ВІР.сс 和 кеfu", "官网 вip.cc 和 kefu"),
    ("cyrillic_capitals_lowered_first", "САЙТ ОК", "caйт ok"),
    ("domain_dot_spelled", "官网68yl点com进", "官网68yl.com进"),
    ("domain_dot_spaced", "abc 点 cc 见", "abc.cc 见"),
    ("domain_dot_word", "site: pk dot vip", "site: pk.vip"),
    ("domain_dot_not_after_han", "我点com的外卖", "我点com的外卖"),
    ("domain_dot_not_a_tld", "3点comic展", "3点comic展"),
    ("styled_letters", "𝐕𝐗：𝐤𝐞𝐟𝐮𝟖𝟖", "微信:kefu88"),
    ("circled_letters", "Ⓥ：ⓚⓔⓕⓤ①②③", "微信:kefu123"),
    ("emoji_separator", "刷🍀单", "刷单"),
    ("emoji_separator_vs16", "刷❤️单", "刷单"),
    ("emoji_subst_ice", "❄️出货，要的私", "冰出货,要的私"),
    ("emoji_subst_leaf", "🍃便宜出", "叶子便宜出"),
    ("emoji_subst_pill", "💊到货", "药到货"),
    ("emoji_subst_plane", "✈️:@kefu888", "电报:@kefu888"),
    ("emoji_subst_money", "日赚💰💰", "日赚钱钱"),
    ("emoji_subst_card_game", "🐮🐮金🌸可以玩", "牛牛金花可以玩"),
    ("emoji_subst_bonus_water", "今晚大💦", "今晚大水"),
    ("emoji_subst_search", "浏览器🔍一下", "浏览器搜一下"),
    ("emoji_subst_dog", "母🐶", "母狗"),
    ("emoji_subst_door", "同城上🚪服务", "同城上门服务"),
    ("emoji_subst_brick", "在家搬🧱，日🧱三百", "在家搬砖,日砖三百"),
    ("pinyin_joined", "有bingdu要的来", "有冰毒要的来"),
    ("pinyin_spaced", "出 bing du 了", "出冰毒了"),
    ("pinyin_dotted", "hai.luo.yin 有货", "海洛因有货"),
    ("pinyin_upper", "SHUADAN 日结", "刷单日结"),
    ("pinyin_initials", "ytw 到了", "摇头丸到了"),
    ("cue_v_colon", "v:abc123", "微信:abc123"),
    ("cue_jia_v", "加v好友", "加微信好友"),
    ("cue_jia_space_v", "加 v", "加微信"),
    ("cue_plus_v", "➕V详聊", "+微信详聊"),
    ("cue_vx", "vx: kefu666", "微信: kefu666"),
    ("cue_wx", "wx 13812345678", "微信 13812345678"),
    ("cue_v_xin", "V信同号", "微信同号"),
    ("cue_wei_x", "微X：abc123", "微信:abc123"),
    ("cue_wei_alone_id", "薇 abc12345", "微信 abc12345"),
    ("cue_wei_verb", "加薇", "加微信"),
    ("cue_wei_verb_sep", "加 . 威", "加微信"),
    ("cue_hui_colon", "徽：kefu88", "微信:kefu88"),
    ("cue_wei_xin_1", "位信 abc123", "微信 abc123"),
    ("cue_weixin_pinyin", "weixin：abc123", "微信:abc123"),
    ("cue_weixin_traditional", "威信：abc123", "微信:abc123"),
    ("cue_koukou", "扣扣 12345678", "qq 12345678"),
    ("cue_qq_upper", "QQ：12345678", "qq:12345678"),
    ("cue_penguin", "企鹅：12345678", "qq:12345678"),
    ("cue_q_hao", "Q号12345678", "qq12345678"),
    ("cue_plane_colon", "飞机：@kefu888", "电报:@kefu888"),
    ("cue_paper_plane", "纸飞机联系", "电报联系"),
    ("cue_tg", "TG @kefu888", "电报 @kefu888"),
    ("cue_telegram", "Telegram: kefu888", "电报: kefu888"),
    ("cue_jia_plane", "加飞机", "加电报"),
    ("chinese_digits_phone", "电话一三八一二三四五六七八", "电话13812345678"),
    ("capital_digits", "壹叁捌壹贰叁肆伍陆柒捌", "13812345678"),
    ("mixed_digits", "138一二三四五六七八", "13812345678"),
    ("spaced_chinese_digits", "一 三 八 一 二 三 四 五", "13812345"),
    ("dashed_chinese_digits", "一三八-一二三四-五六七八", "13812345678"),
    ("keycap_digits", "1️⃣3️⃣8️⃣", "138"),
    ("whitespace_runs", "  冰毒\t\n 现货  ", "冰毒现货"),
]

# (reason, text that must come out unchanged)
UNCHANGED = [
    ("threat", "他威胁我要报警"),
    ("authority", "专家说的很权威"),
    ("authority_colon", "权威:专家解读"),
    ("prestige", "老师在学生中很有威信"),
    ("satellite", "卫星发射成功了"),
    ("aircraft", "明天坐飞机去北京"),
    ("penguin", "南极的企鹅很可爱"),
    ("slightly", "稍微等一下"),
    ("deduct", "扣了我三百块"),
    ("english_spacing", "hello world"),
    ("english_sentence", "see you at 3pm, ok?"),
    ("one_person", "一个人去吃饭"),
    ("short_numbers", "三五成群,七上八下"),
    ("ordinary", "今天天气不错,我们去公园散步吧"),
    ("commas_kept", "好的,明天见!"),
    ("vip_word", "我是vip会员"),
    ("english_v", "version v2 released"),
    ("tv_word", "看tv节目"),
    ("url_not_pinyin", "访问 bingdu.com 查看"),
    ("handle_not_pinyin", "@bingdu 你好"),
    ("wxid_not_cue", "wxid_abc12345"),
    ("latin_term_untouched", "k粉"),
    ("slash_kept_in_paths", "http://a.com/玫瑰"),
]


# QQ / WeChat emoticon codes pasted as text split words like emoji do (reason, original, expected).
FACES = [
    ("qq_slash_face", "兼/玫瑰职", "兼职"),
    ("qq_em_code", "刷[em]e400105[/em]单", "刷单"),
    ("wechat_bracket_face", "[捂脸]好的", "好的"),
    ("faces_rejoin_a_face", "/玫[em]e1[/em]瑰好", "好"),
    ("one_char_slash_is_an_evasion", "黄/色", "黄色"),
]


@pytest.mark.parametrize(("reason", "original", "expected"), FACES, ids=[r[0] for r in FACES])
def test_chat_faces_dropped(norm: Normalizer, reason: str, original: str, expected: str) -> None:
    r = norm.normalize(original)
    assert r.text == expected == norm.normalize_text(original), reason
    assert norm.normalize_text(r.text) == r.text


@pytest.mark.parametrize(("reason", "original", "expected"), EVASIONS, ids=[r[0] for r in EVASIONS])
def test_evasion_folded(norm: Normalizer, reason: str, original: str, expected: str) -> None:
    r = norm.normalize(original)
    assert r.text == expected, reason
    assert norm.normalize_text(original) == expected


@pytest.mark.parametrize(("reason", "text"), UNCHANGED, ids=[r[0] for r in UNCHANGED])
def test_ordinary_text_kept(norm: Normalizer, reason: str, text: str) -> None:
    assert norm.normalize(text).text == text, reason


# (reason, original, term in normalized text, the original span it must map back to)
SPANS = [
    ("space", "出冰 毒,量大", "冰毒", "冰 毒"),
    ("dot_spaced", "买冰 . 毒吗", "冰毒", "冰 . 毒"),
    ("zero_width", "刷\u200c单兼职", "刷单", "刷\u200c单"),
    ("emoji_sep", "急招刷🍀单", "刷单", "刷🍀单"),
    ("fullwidth", "ＶＸ：ａｂｃ１２３", "abc123", "ａｂｃ１２３"),
    ("traditional", "冰毒販賣", "贩卖", "販賣"),
    ("circled", "电话①③⑧①②③④⑤⑥⑦⑧", "13812345678", "①③⑧①②③④⑤⑥⑦⑧"),
    ("pinyin", "有bingdu要的来", "冰毒", "bingdu"),
    ("pinyin_spaced", "出 bing du 了", "冰毒", "bing du"),
    ("cue", "加v好友", "微信", "v"),
    ("emoji_word", "要❄️吗", "冰", "❄️"),
    ("chinese_digits", "电话一三八一二三四五六七八", "13812345678", "一三八一二三四五六七八"),
    ("domain_dot", "上68yl 点 com看", "68yl.com", "68yl 点 com"),
    ("dingbat_digits", "报❶❸➑号", "138", "❶❸➑"),
]


@pytest.mark.parametrize(("reason", "original", "term", "span"), SPANS, ids=[r[0] for r in SPANS])
def test_offsets_map_back(norm: Normalizer, reason: str, original: str, term: str, span: str) -> None:
    r = norm.normalize(original)
    start = r.text.index(term)
    ostart, oend = r.to_original(start, start + len(term))
    assert original[ostart:oend] == span, reason


def test_to_original_edges(norm: Normalizer) -> None:
    r = norm.normalize("  冰 毒  ")
    assert r.to_original(0, 0) == (2, 2)
    assert r.to_original(len(r.text), len(r.text)) == (len(r.original), len(r.original))
    assert r.to_original(-5, 99) == (2, 5)  # clamped to the text
    empty = norm.normalize("")
    assert empty == Normalized("", "", (), ())
    assert empty.to_original(0, 0) == (0, 0)


def test_no_lexicon_means_no_pinyin() -> None:
    assert Normalizer().normalize("bingdu").text == "bingdu"


def test_short_and_english_pinyin_skipped() -> None:
    # 白(bai) is one syllable; 大厅 is "dating", an English word
    n = Normalizer(lexicon=["白", "大厅"])
    assert n.normalize("bai dating").text == "bai dating"


def test_ambiguous_spelling_not_guessed() -> None:
    # 冰毒 and 兵毒 share "bingdu": the normalizer must not pick one
    n = Normalizer(lexicon=["冰毒", "兵毒"])
    assert n.normalize("bingdu").text == "bingdu"


def test_lexicon_terms_normalize_to_themselves(norm: Normalizer) -> None:
    for term in ["冰毒", "摇头丸", "刷单", "海洛因"]:
        assert norm.normalize(term).text == term


# --- properties ------------------------------------------------------------------------------

TRICKY = st.sampled_from(
    [
        *"加v微信威薇 :.*-_/|…abcq1扣企鹅飞机tg冰毒一二三五八零❄🍀✈\u200b\u200d\ufe0f\t\nＡ①販@权胁+➕x号",
        *"νсВ🧱īÁ",  # look-alike letters, a word emoji, letters with diacritics
        *[
            "bing",
            "du",
            "ytw",
            "wx",
            "vx",
            "qq",
            "\ud800",
            "\x00",
            "hai luo yin",
            "点",
            "。",
            "dot",
            "com",
            "cc",
            "❾",
            "⓫",
        ],
    ]
)
WITH_SURROGATES = st.text(
    st.one_of(st.characters(exclude_categories=()), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
)
ANY_TEXT = st.one_of(st.text(), WITH_SURROGATES, st.lists(TRICKY, max_size=16).map("".join))


def check_normalized(norm: Normalizer, text: str) -> None:
    r = norm.normalize(text)
    assert r.original == text
    assert norm.normalize_text(text) == r.text
    # the identity shortcut (nothing changed) agrees with the offset-keeping path, and so does
    # the lazy variant the classifier uses
    assert r == norm._tracked(text)
    lazy = norm.normalize_lazy(text)
    assert lazy.text == r.text and lazy.full() == r
    assert len(r.offsets) == len(r.text) == len(r.ends)
    if text:
        assert all(0 <= o < len(text) for o in r.offsets)
        assert all(o < e <= len(text) for o, e in zip(r.offsets, r.ends, strict=True))
    else:
        assert r.text == ""
    assert all(a <= b for a, b in zip(r.offsets, r.offsets[1:], strict=False))
    again = norm.normalize(r.text).text
    assert again == r.text, "not idempotent"


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ANY_TEXT)
def test_property_never_raises_idempotent_offsets_valid(norm: Normalizer, text: str) -> None:
    check_normalized(norm, text)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(piece=st.one_of(WITH_SURROGATES, st.lists(TRICKY, max_size=16).map("".join)).filter(bool))
def test_property_100k_chars(norm: Normalizer, piece: str) -> None:
    check_normalized(norm, (piece * (100_000 // len(piece) + 1))[:100_000])


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\t\n\r ",
        "🍀🍀🍀",
        "\ud800",
        "\udfff冰\ud800毒",
        "\x00\x01\x7f",
        "\u200b\u200c\u200d\ufeff",
        "\U0010ffff",
        "冰 毒 hello ❄ bing du 加v " * 5000,  # ~100,000 characters
        "a" * 100_000,
    ],
    ids=[
        "empty",
        "space",
        "whitespace",
        "emoji_only",
        "lone_surrogate",
        "surrogates_mixed",
        "controls",
        "format_only",
        "last_code_point",
        "long_mixed",
        "long_ascii",
    ],
)
def test_edge_inputs(norm: Normalizer, text: str) -> None:
    check_normalized(norm, text)


def test_identity_shortcut_on_project_corpus(norm: Normalizer) -> None:
    """Generated messages (most take the identity shortcut) give what the offset-keeping path gives."""
    from classifier.generate import GeneratorConfig, generate
    from classifier.seeds import load_seeds

    texts = [
        e.text for e in generate(load_seeds(), GeneratorConfig(seed=2, per_category=100, ok_templated=200))
    ]
    shortcut = 0
    for text in texts:
        r = norm.normalize(text)
        assert r == norm._tracked(text), text
        shortcut += r.text == text.translate(norm._cmap)
    assert shortcut > len(texts) // 4  # the shortcut is actually exercised


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(max_size=40)
    | st.text(alphabet=st.sampled_from("加微信冰毒ＡＢ１２\x00\u200b😀𝕏 ,.\ud800"), max_size=40)
)
def test_seen_tables_translate_as_the_tables(text: str) -> None:
    """str.translate through the defaultdict of entries seen so far (unseen characters marked,
    mapped, then translated again) gives what the self-filling tables give, NUL included."""
    n = Normalizer()  # a fresh map: every character unseen at first
    for _ in range(2):  # unseen, then seen
        assert n._cmap.translate(text) == text.translate(n._cmap)
        assert n._cmap.irregular_in(text) == text.translate(n._cmap.irregular)
