"""Table-driven detection cases on the shipped model: one row a case, each with its reason.

`flag:<category>` means the verdict must be delete or review with that label; `pass` means the
message must pass. Examples are written for this project (never taken from evaluation data).
"""

from __future__ import annotations

import pytest

import classifier

CASES = [
    # --- drug solicitations ---
    ("出冰 出冰 质量保证 同城可送 加V：bing8899", "flag:drug", "sale slang + delivery + contact"),
    ("长期出麻古K粉，量大从优，飞机 @dd_shop", "flag:drug", "slang names of drugs + contact"),
    ("出 冰 毒，懂的私聊", "flag:drug", "evasion: spaces between characters"),
    ("出冰‌毒，老客户打折，微信 abc778", "flag:drug", "evasion: zero-width joiner inside the term"),
    ("長期出冰，質量保證，同城送貨", "flag:drug", "evasion: traditional characters"),
    ("今晚聚会有没有叶子，要的找我，价格好说", "flag:drug", "slang leaf = cannabis, offered"),
    # --- fraud solicitations ---
    ("兼职刷单日结，一单一结，宝妈学生都可以做，加V了解", "flag:fraud", "classic brushing-task recruitment"),
    ("急招点赞员，手机操作，日入300+，薇：wxid_ab12cd", "flag:fraud", "task scam, homophone contact cue"),
    ("黑户也能下款，不看征信，当天放款，私聊", "flag:fraud", "loan offer to people with bad credit"),
    ("高价收银行卡，一张给800，四件套都要，飞机联系", "flag:fraud", "buying bank cards (money mule)"),
    ("带单老师内幕消息，稳赚不赔，进群跟单 t.me/gogogo", "flag:fraud", "investment teacher + group link"),
    ("币圈大神带单，合约稳赚，想上车的私", "flag:fraud", "crypto tipster: the market names the scheme"),
    ("股票亏了怎么办，心态崩了", "pass", "talk about stocks"),
    ("兼耳只刷dan，日洁三百，嘉薇详聊", "flag:fraud", "dense homophone chain"),
    (
        "【快递理赔】您的包裹丢失，点击链接办理退款 http://kd-pei.cc/r",
        "flag:fraud",
        "fake customer-service refund SMS",
    ),
    # --- obscene solicitations ---
    ("同城上门服务，包夜1500，学生妹，加V看照片", "flag:obscene", "outcall escort ad with price"),
    ("福利视频资源，9.9元100部，需要的私我", "flag:obscene", "porn resource sale"),
    ("🔞 约 炮 同城 🔞 加我", "flag:obscene", "evasion: spaces and emoji"),
    ("會所新到幾個妹子，全套服務，預約電話13812345678", "flag:obscene", "traditional characters + phone"),
    # --- gambling solicitations ---
    (
        "百家乐真人视讯，首充送100%，注册网址 www.bjl888.com",
        "flag:gambling",
        "casino promo with signup bonus",
    ),
    ("六合彩三肖稳中，跟我下注，进群飞机 @lhc_king", "flag:gambling", "lottery tips + group"),
    ("新开棋牌平台，返水1.5%，日提百万秒到账", "flag:gambling", "card platform rebate promo"),
    ("粽合苔上线，首存送彩金，刘氺一倍即可提", "flag:gambling", "homophones for 综合台 / 流水"),
    # --- terse offers with a bare contact cue, no id (the id sits in the profile) ---
    ("出冰 加V", "flag:drug", "the mission's own example: slang offer + bare cue"),
    ("刷单日结 加V", "flag:fraud", "brushing-task offer + bare cue"),
    ("跑分 加V", "flag:fraud", "payment-laundering offer + bare cue"),
    ("同城上门 加V", "flag:obscene", "outcall offer + bare cue"),
    ("百家乐 加V", "flag:gambling", "casino game + bare cue"),
    ("加个微信吧，周末一起爬山", "pass", "friends swapping contacts: a bare cue is no offer"),
    ("疯狂星期四，谁V我50", "pass", "the KFC Thursday joke"),
    # --- chat-register offers without contact details (round 4 shapes) ---
    ("出穿了三天的黑丝，原味的，可以指定款式", "flag:obscene", "used clothing sold as fetish items"),
    ("寻主，本人m，22岁，杭州，可以线下", "flag:obscene", "master/slave recruiting"),
    ("小黄片一部两块，十部打包十五", "flag:obscene", "per-clip price offer"),
    ("快猫破解版，永久会员，要的加我", "flag:obscene", "porn app resold as a cracked build"),
    ("居家富叶，手机操作，日洁两三百", "flag:fraud", "side-job pitch spelled with homophones"),
    # sound-alike characters the generator's homophone table does not list (煎, 伽, 囿, 兵独); the
    # stop-12 model, without sound n-grams, passed the 兵独 line (0.657 against its review 0.66)
    ("诚招煎职，日洁两百，伽薇信", "flag:fraud", "煎职 / 伽 sound as 兼职 / 加"),
    ("囿意的私我，副叶一天三百", "flag:fraud", "囿意 sounds as 有意"),
    ("兵独出货，同城配送", "flag:drug", "兵独 sounds as 冰毒"),
    ("这个剪纸作品简直太美了", "pass", "简直 sounds as 兼职: the sound alone is no sign"),
    ("帮忙接验证码，一个给30，当天结", "flag:fraud", "paid phone chore (SIM and code farming)"),
    ("炸金花开房了，一块一分，微信上下分", "flag:gambling", "card table with money stakes"),
    ("新网址 bet88点cc，注册就送38", "flag:gambling", "domain spelled with 点 to dodge link filters"),
    ("兼/玫瑰职刷/玫瑰单，日结三百，加V了解", "flag:fraud", "evasion: QQ face codes between characters"),
    # --- offers written as sentences: 。 and ！ are no sign of honest chat ---
    ("高价收购闲置银行卡，一张八百，当天结清。", "flag:fraud", "card buying, ending with a full stop"),
    ("在家就能做的兼职，日结两百！有意者私我！", "flag:fraud", "side-job pitch with exclamation marks"),
    ("出自己穿过的丝袜。可以定制。", "flag:obscene", "fetish clothing sale in full sentences"),
    # --- the pitch told as one's own story (round 7) ---
    (
        "我以前也不信，做了两个月手机上的活，现在每月多两三千，想试试的找我",
        "flag:fraud",
        "first-person income story + invitation",
    ),
    (
        "上周在一个平台玩牛牛赢了六千，已经提现了，想玩的我发你",
        "flag:gambling",
        "first-person win + invitation",
    ),
    ("我同事玩网上那种平台输了好几万，劝都劝不住", "pass", "someone's gambling loss told, no invitation"),
    ("我最近晚上在做代驾，一个月多挣两千多，就是熬人", "pass", "one's own side job told, no invitation"),
    # --- porn asked for, and the same asks for honest things (round 8) ---
    ("求个能看黄片的网站，旧的打不开了", "flag:obscene", "the demand side: a porn site asked for"),
    ("本人自录视频，二十一个，先付后发", "flag:obscene", "self-made clips priced by the piece"),
    ("求三体电视剧的资源，网盘链接也行", "pass", "a TV series asked for: 求资源 alone is no sign"),
    ("谁有B站大会员，借我看个番", "pass", "a video-site membership borrowed"),
    ("手工编织围巾，一条八十，喜欢的私聊", "pass", "one's own handicraft sold with a price and a contact"),
    ("我女儿在学芭蕾，录了段视频给奶奶看", "pass", "a family video: 女儿 / 视频 / 看"),
    ("帮朋友代购韩国面膜和维生素，月底发货，要的私聊", "pass", "honest 代购: what is bought decides"),
    ("跑外卖三年了，旺季一天能挣四百", "pass", "a rider's pay: 一天 / 挣 are everyday words"),
    ("商场周末招促销员，一天两百，学生可以来", "pass", "an honest in-person gig with the day's pay"),
    ("代购安眠药，不用处方，同城可送，私聊", "flag:drug", "prescription-free sleeping pills: the same frame"),
    # --- hard negatives: the topic, not a solicitation ---
    ("警方破获贩毒案，缴获冰毒5公斤", "pass", "news about a drug bust"),
    ("反诈提醒：刷单就是诈骗，凡是要先垫付的都是骗子", "pass", "anti-fraud warning"),
    ("冰糖雪梨真好喝，夏天必备", "pass", "homograph: 冰糖 is rock sugar"),
    ("周末带孩子去溜冰场玩了一下午", "pass", "homograph: 溜冰场 is an ice rink"),
    ("秋天到了，叶子黄了", "pass", "homograph: 叶子 are leaves"),
    ("今晚一起去K歌吧", "pass", "homograph: K歌 is karaoke"),
    ("空调坏了，约了师傅明天上门维修", "pass", "homograph: 上门 repair visit"),
    ("这家火锅的全套餐两百多，挺划算", "pass", "homograph: 全套餐 is a set meal"),
    ("/help", "pass", "a bot command: a slash and a Latin word"),
    ("/mode off", "pass", "a bot command with an argument"),
    ("/start@weatherbot 上海", "pass", "a command addressed to another bot"),
    ("群规：禁止发布赌博、色情、刷单广告，违者踢出", "pass", "group rules naming the topics"),
    ("请问大家，怎么分辨网上兼职是不是骗局？", "pass", "honest question about scams"),
    ("我妈被冒充客服的骗了两千，已经报警了", "pass", "victim story"),
    ("禁毒宣传：珍爱生命，远离毒品", "pass", "anti-drug education"),
    ("出一台二手iPhone 13，九成新，价格私聊", "pass", "legit second-hand sale with a contact cue"),
    ("公司招前端实习生，简历发我邮箱，有兴趣私聊", "pass", "legit job post"),
    ("终于考研上岸了，请大家喝奶茶", "pass", "homograph: 上岸 passing an exam"),
    ("年夜饭后一家人斗地主，输了的洗碗", "pass", "card game played for fun"),
    ("狗狗见到主人回家，尾巴摇个不停", "pass", "homograph: 主人 of a pet"),
    ("买了几双棉袜，穿着挺舒服的", "pass", "clothing talk"),
    ("出件风衣，只穿过一回，L码，有意私", "pass", "worn clothes resold: size and times worn, no fetish"),
    ("闲置一双耐克跑鞋，穿过三次，43码，两百出", "pass", "worn shoes resold"),
    (
        "家里的小柯基找新主人，很乖，有意向的私我",
        "pass",
        "a pet looking for a home: 小狗 / 主人 / 私, said of a dog",
    ),
    ("有人想领养猫咪吗，免费送，要求别弃养", "pass", "pet adoption"),
    ("帮人写简历，需要的私聊", "pass", "writing service"),
    ("上门回收旧家电，高价收，电话联系", "pass", "recycling: 高价收 is not card buying"),
    ("找个周末一起打羽毛球的搭子", "pass", "an activity buddy (搭子)"),
    ("上班之余想搞个副业，大家有什么建议吗", "pass", "side job asked about, not offered"),
    ("你好", "pass", "greeting"),
    ("哈哈哈哈哈", "pass", "short reply"),
]


@pytest.fixture(scope="module")
def clf() -> object:
    return classifier.load()


@pytest.mark.parametrize(
    ("text", "expected", "reason"), CASES, ids=[c[2] if isinstance(c, tuple) else c.values[2] for c in CASES]
)
def test_case(clf, text: str, expected: str, reason: str) -> None:
    v = clf.classify(text)
    got = "pass" if v.action == "pass" else f"flag:{v.label}"
    assert got == expected, f"{reason}: {text!r} -> {v.label} {v.action} {v.score:.2f} {dict(v.scores)}"
