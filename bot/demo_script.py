"""The scripted group conversation `qinglang demo` plays: who says what, and what it is meant to show.

Plain data; `bot/demo.py` turns each line into a Bot API update for the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "photo", "video", "document", "edit", "forward", "via_bot", "text_link", "button"]


@dataclass(frozen=True, slots=True)
class Person:
    user_id: int
    name: str
    username: str | None = None
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Line:
    who: str  # a key of CAST
    text: str
    shows: str  # what this line demonstrates (printed next to the outcome)
    kind: Kind = "text"
    edit_of: int | None = None  # for kind="edit": the index (in SCRIPT) of the line being edited
    url: str | None = None  # for text_link and button
    from_channel: str | None = None  # for kind="forward": the channel's title
    expect: str | None = None  # the outcome the demo expects: ok | deleted | review | skipped | any


GROUP_ID = -1001000000001
GROUP_TITLE = "清朗演示群"

CAST: dict[str, Person] = {
    "owner": Person(1001, "群主老张", "lao_zhang", admin=True),
    "wang": Person(1002, "小王", "xiaowang"),
    "li": Person(1003, "李姐", "li_jie"),
    "chen": Person(1004, "陈老师", "teacher_chen"),
    "spam1": Person(2001, "兼职客服小雨", "jianzhi_yu"),
    "spam2": Person(2002, "阿强", None),
    "spam3": Person(2003, "美美", "meimei_888"),
}

SCRIPT: list[Line] = [
    # ordinary chat
    Line("wang", "大家早上好！今天天气不错，周末有人一起去爬山吗？", "ordinary chat", expect="ok"),
    Line("li", "我去！上次那条路线风景特别好，记得带水。", "ordinary chat", expect="ok"),
    Line("chen", "这周作业是第三章习题，周五前交到学习委员那里。", "ordinary chat", expect="ok"),
    Line("wang", "有人知道附近哪家修手机靠谱吗？屏幕摔碎了。", "ordinary chat", expect="ok"),
    # hard negatives: talk about the topics, not solicitation
    Line("li", "新闻说警方昨天破获一起贩毒案，缴获冰毒两公斤，抓了五个人。", "news about drugs", expect="ok"),
    Line(
        "chen",
        "提醒大家：自称客服说要给你退款、让你提供验证码的都是诈骗，千万别转账！",
        "anti-fraud warning",
        expect="ok",
    ),
    Line("wang", "今晚世界杯决赛，你们看好哪个队？", "sports talk", expect="ok"),
    Line("li", "我妈又在朋友圈转发养生谣言了，怎么劝都不听😂", "everyday talk", expect="ok"),
    # solicitations in every category, plain and evasive
    Line("spam2", "出冰，货真价实，量大从优，需要的加V：bing8888", "drug sale", expect="deleted"),
    Line(
        "spam2",
        "有需要 叶 子 和 k 粉 的私聊我，飞机 @ye_zi_shop 同城闪送",
        "drug sale, spaced out",
        expect="deleted",
    ),
    Line(
        "spam1",
        "急招刷单员，手机操作，日结300-500，不收任何费用，加QQ 2837465910",
        "fraud: task scam",
        expect="deleted",
    ),
    Line(
        "spam1",
        "高价收银行卡、对公账户，跑分刘氺日入过万，详情私聊",
        "fraud: card renting, homophone",
        expect="deleted",
    ),
    Line(
        "spam3",
        "同城上门服务，学生妹兼职，全套包夜，看头像加微信 mm52099",
        "obscene: sex service",
        expect="deleted",
    ),
    Line(
        "spam3",
        "寂寞了嗎？約炮找我，視頻裸聊一對一，私信發你福利",
        "obscene, traditional characters",
        expect="deleted",
    ),
    Line(
        "spam1", "澳门首家线上赌场，百家乐真人荷官，注册即送88元彩金，日赢万元", "gambling", expect="deleted"
    ),
    Line(
        "spam2",
        "ｂｏ彩平台粽合苔，时时彩北京赛车稳赚不赔，带你上岸",
        "gambling: full-width, homophones",
        expect="deleted",
    ),
    # where the text hides
    Line(
        "spam3",
        "高价收微信号、QQ号，当天结算，私聊",
        "fraud in a photo caption",
        kind="photo",
        expect="deleted",
    ),
    Line(
        "spam1",
        "点这里领取福利",
        "a text_link whose URL is the solicitation",
        kind="text_link",
        url="http://bocai-888.example/注册送彩金-百家乐",
        expect="any",
    ),
    Line(
        "spam2",
        "今日推荐",
        "a URL button via an inline bot",
        kind="button",
        url="http://dk.example/网贷秒批-无视黑白户-当天放款",
        expect="any",
    ),
    Line(
        "wang",
        "兼职刷单，日结佣金，加微信 sd12345 带你赚钱",
        "a forward from a channel",
        kind="forward",
        from_channel="福利发布频道",
        expect="deleted",
    ),
    # an edit that turns a clean message into a solicitation
    Line("li", "明天下午三点开会，地点在二楼会议室。", "clean at first", expect="ok"),
    Line(
        "li",
        "出售冰毒麻古，货到付款，加微信 bd6688",
        "…then edited into a drug sale",
        kind="edit",
        edit_of=20,
        expect="deleted",
    ),
    # strikes: a third deletion for the same sender mutes them
    Line(
        "spam2",
        "正规网贷平台，无视征信黑户秒批，当天放款5万，加V：dai888",
        "a repeat offender (strikes: muted at the third)",
        expect="deleted",
    ),
    # admins are never judged, and an admin runs a command
    Line(
        "owner",
        "注意：群里有人发“出冰 加V”这种广告，看到直接举报。",
        "an admin quoting spam",
        expect="skipped",
    ),
    Line("owner", "/status", "an admin runs a command", expect="any"),
    Line("chen", "谢谢群主，清净多了。", "ordinary chat", expect="ok"),
]
