"""Export record builders, one per Iterable export ``dataTypeName``, and the registry that makes the set of
served types data: type -> (builder, daily volume, medium of the campaigns its events reference, ...).

Builders write NDJSON lines from pre-encoded JSON fragments (the export hot loop). Each takes
(rng, day "YYYY-MM-DD", day epoch ms, second of day, user, campaign), and those of the types chained to an
emailSend also the send's messageId (an int; None for a record that answers no send). A user is a tuple of
JSON fragments (see Dataset._event_user): its identity members for email-channel events and for the others
(each member followed by a comma: only the identifiers the user has, so an absent one has no key), ip,
subscribe fields, list ids, phone number, deviceInfo object, push endpoint, browser token. A campaign is
(campaignId, templateId, messageTypeId, channelId, contentId), or None for types whose events carry no
campaign. Field names and JSON types follow captured records (Airbyte's expected records, Iterable's webhook
examples) and public connector schemas; several per-type details are unconfirmed guesses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from functools import lru_cache
from typing import NamedTuple

_HMS = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]


def json_text(value) -> str:
    """Compact JSON like Iterable's export (raw UTF-8; quotes and control characters escaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_fields(obj: dict) -> str:
    """JSON object members ready to splice into a line, with a trailing comma ('' when empty)."""
    return json_text(obj)[1:-1] + "," if obj else ""


_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"
# Browsers and mail apps (clicks, and opens not fetched by a proxy): real clicks never carry proxySource.
_AGENTS = [
    json_fields({"userAgent": ua, "userAgentDevice": dev})
    for ua, dev in (
        (f"Mozilla/5.0 (X11; Linux x86_64) {_WEBKIT} Chrome/88.0.4324.150 Safari/537.36", "Linux"),
        (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_WEBKIT} Chrome/120.0 Safari/537.36", "Windows"),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Mobile/15E148",
            "iPhone",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0",
            "Mac",
        ),
        (f"Mozilla/5.0 (Linux; Android 14; Pixel 8) {_WEBKIT} Chrome/120.0 Mobile Safari/537.36", "Android"),
    )
]
# Opens fetched by a mail provider's image proxy, as captured: Apple Mail Privacy Protection (a bare agent, a
# Cloudflare 104.28.x address, a location) and Gmail's proxy (no location; proxySource on some records only).
_APPLE_OPEN = json_fields({"userAgent": "Mozilla/5.0", "userAgentDevice": "-", "proxySource": "Apple"})
_GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
_GMAIL_OPENS = [
    json_fields({"userAgent": _GMAIL_PROXY, "userAgentDevice": "Gmail", **extra})
    for extra in ({}, {"proxySource": "Gmail"})
]  # fmt: skip
_LOCATIONS = [
    json_fields(loc)
    for loc in (
        {"city": "Kyiv", "country": "Ukraine", "region": "30"},
        {"city": "Hyderabad", "country": "India", "region": "TG"},
        {"city": "São Paulo", "country": "Brazil", "region": "SP"},
        {"city": "Zürich", "country": "Switzerland", "region": "ZH"},
        {"city": "Denver", "country": "United States", "region": "CO"},
        {"country": "Germany"},
        {},
        {},
    )
]
_URLS = [
    json_text(u)
    for u in (
        "https://iterable.com",
        "https://example.com/p/red-shirt",
        "https://example.com/sale?utm_source=email&utm_campaign=spring",
        "https://example.com/unsubscribe?list=all",
        'https://example.com/blog/"quoted"-post',
    )
]
_TRANSACTIONAL = [
    ',"transactionalData":' + json_text(json_text(obj))
    for obj in (  # a JSON-encoded *string*, as Iterable sends it
        {"name": "Red Shirt", "sku": "sku1", "price": 25},
        {"name": "Blue Jeans", "sku": "sku2", "price": 60, "categories": ["apparel", "denim"]},
        {"name": "Café Mug", "sku": "sku3", "price": 12, "compare_at_price": 15.5, "vendor": "Acme"},
        {"orderId": "A-1001", "total": 97.0, "items": [{"sku": "sku1", "qty": 2}]},
    )
]
_SKIP_REASONS = [
    json_text(r)
    for r in (
        "DuplicateMarketingMessage",
        "FrequencyCapExceeded",
        "MessageTypeUnsubscribed",
        "ListUnsubscribed",
        "InvalidEmail",
    )
]
_BOUNCES = [
    json_fields({"recipientState": state, "status": code})
    for state, code in (
        ("HardBounce", "5.1.1"),
        ("HardBounce", "5.1.10"),
        ("SoftBounce", "4.2.2"),
        ("SoftBounce", "4.4.7"),
    )
]
SIGNUP_SOURCES = ("ListAPI", "Import", "WebForm", "API")
_UNSUB_SOURCES = ("EmailLink", "Import", "ListAPI")


# ---- email ----------------------------------------------------------------------------------
# Email builders write u[0], the identity members for email-channel events: in email-based projects only the
# email (as captured), elsewhere the email and/or the userId (an email-less user gets no email events).

# Every email channel, as a HardBounce unsubscribe lists them (the captured one: [39582,39581]); the ids of
# data._CHANNELS.
_EMAIL_CHANNEL_IDS = "[39582,39581]"


def _email_send(r, d, t, s, u, c, m):
    x = r.random()
    tx = _TRANSACTIONAL[int(x * 5 * len(_TRANSACTIONAL))] if x < 0.2 else ""
    b = f"{r.getrandbits(128):032x}"
    return (
        f'{{{u[0]}"messageTypeId":{c[2]},"catalogLookupCount":0,"templateId":{c[1]},'
        f'"messageBusId":"0100{t + s * 1000 + int(x * 1000):012x}-'
        f'{b[:8]}-{b[8:12]}-{b[12:16]}-{b[16:20]}-{b[20:]}-000000",'
        f'"messageId":"{m:032x}","createdAt":"{d} {_HMS[s]} +00:00","catalogCollectionCount":0,'
        f'"campaignId":{c[0]},"channelId":{c[3]},"productRecommendationCount":0,"contentId":{c[4]},'
        f'"espName":"SES"{tx}}}\n'
    )


def _skip(reasons):
    """A send-skip builder: captured skips are sparse (createdAt, reason, campaignId, messageId, the recipient)."""

    def build(r, d, t, s, u, c):
        return (
            f'{{{u[0]}"createdAt":"{d} {_HMS[s]} +00:00","reason":{reasons[int(r.random() * len(reasons))]},'
            f'"campaignId":{c[0]},"messageId":"{r.getrandbits(128):032x}"}}\n'
        )

    return build


def _email_open(r, d, t, s, u, c, m):
    x = r.random()
    if x < 0.3:
        seen = f'{_LOCATIONS[int(x * 16)]}"ip":"104.28.{int(x * 850)}.{r.randint(1, 254)}",{_APPLE_OPEN}'
    elif x < 0.45:
        seen = f'"ip":"66.249.{80 + int(x * 40)}.{r.randint(1, 254)}",{_GMAIL_OPENS[x < 0.38]}'
    else:
        seen = f'{_LOCATIONS[int(r.random() * len(_LOCATIONS))]}"ip":{u[1]},{_AGENTS[int(x * 9) % len(_AGENTS)]}'
    return (
        f'{{{seen}{u[0]}"templateId":{c[1]},"messageId":"{m:032x}","createdAt":"{d} {_HMS[s]} +00:00",'
        f'"campaignId":{c[0]},"contentId":{c[4]}}}\n'
    )


def _email_click(r, d, t, s, u, c, m):
    x = r.random()
    return (
        f'{{{_LOCATIONS[int(r.random() * len(_LOCATIONS))]}"ip":{u[1]},'
        f'{_AGENTS[int(r.random() * len(_AGENTS))]}"templateId":{c[1]},"messageId":"{m:032x}",'
        f'"createdAt":"{d} {_HMS[s]} +00:00","campaignId":{c[0]},"hrefIndex":{int(x * 2)},{u[0]}'
        f'"url":{_URLS[int(x * len(_URLS))]},"contentId":{c[4]}}}\n'
    )


def _email_bounce(r, d, t, s, u, c, m):
    return (
        f'{{{u[0]}"templateId":{c[1]},{_BOUNCES[int(r.random() * len(_BOUNCES))]}'
        f'"messageId":"{m:032x}","createdAt":"{d} {_HMS[s]} +00:00","campaignId":{c[0]}}}\n'
    )


def _email_complaint(r, d, t, s, u, c, m):
    return (
        f'{{{u[0]}"createdAt":"{d} {_HMS[s]} +00:00","campaignId":{c[0]},"templateId":{c[1]},'
        f'"messageId":"{m:032x}","recipientState":"Complaint"}}\n'
    )


def _email_subscribe(r, d, t, s, u, c):
    updated = _HMS[max(0, s - int(r.random() * 5))]  # the profile is written just before the event
    return (
        f'{{{u[2]}"emailListIds":{u[4]},"channelIds":[],{u[3]}"profileUpdatedAt":"{d} {updated} +00:00",'
        f'"createdAt":"{d} {_HMS[s]} +00:00",'
        f'"signupSource":"{SIGNUP_SOURCES[int(r.random() * len(SIGNUP_SOURCES))]}"}}\n'
    )


def _email_unsubscribe(r, d, t, s, u, c, m):
    if m is not None:  # a hard bounce of send m: no campaignId, every email channel
        return (
            f'{{{u[0]}"unsubSource":"HardBounce","emailListIds":[],"channelIds":{_EMAIL_CHANNEL_IDS},'
            f'"templateId":{c[1]},"recipientState":"HardBounce","status":"5.1.1",'
            f'"messageId":"{m:032x}","createdAt":"{d} {_HMS[s]} +00:00"}}\n'
        )
    return (
        f'{{{u[0]}"unsubSource":"{_UNSUB_SOURCES[int(r.random() * 3)]}","emailListIds":{u[4]},'
        f'"channelIds":[],"createdAt":"{d} {_HMS[s]} +00:00"}}\n'
    )


# ---- other channels -------------------------------------------------------------------------

_BOOL = ("false", "true")
_CATALOG = ',"catalogLookupCount":0,"catalogCollectionCount":0,"productRecommendationCount":0'
_CHANNEL_SKIP_REASONS = [
    json_text(r)
    for r in ("DuplicateMarketingMessage", "FrequencyCapExceeded", "MessageTypeUnsubscribed", "ListUnsubscribed")
]
_PUSH_MESSAGES = [
    json_text(m) for m in ("Your cart misses you 🛒", "Flash sale: 20% off today", 'New "classic" tees are in')
]
_WEB_PUSHES = [
    f',"webPushMessage":{json_text(title)},"webPushBody":{json_text(body)},"webPushIcon":{json_text(icon)},"webPushClickAction":{json_text(url)}'
    for title, body, icon, url in (
        ("Back in stock", "The Red Shirt is back.", "https://example.com/i/icon.png", "https://example.com/p/red"),
        ("Spring sale", "Up to 40% off, today only.", "https://example.com/i/icon.png", "https://example.com/sale"),
        ("", None, None, None),  # as in Iterable's example: an empty message, null body, icon and action
    )
]
_CONTEXTS = [
    json_text({"saveToInbox": inbox, "silentInbox": silent, "location": location})
    for inbox, silent, location in ((False, False, "in-app"), (True, False, "in-app"), (True, True, "inbox"))
]
_IN_APP_BODIES = [
    json_text(html)
    for html in (
        '<div class="promo"><h1>Spring sale</h1><a href="https://example.com/sale">Shop now</a></div>',
        '<div><p>Rate your last order</p><a href="itbl://dismiss">Later</a></div>',
    )
]
_PRIORITIES = ("100.5", "200.5", "300.5", "300.5", "400.5")
_DELETE_ACTIONS = ('"inbox-swipe"', '"delete-button"')
_SMS_SENDER_ID = 4021
_SMS_TEXTS = [
    json_text(t) for t in ("Acme: 20% off today with code SPRING. Reply STOP to opt out.", "Your order shipped 📦")
]
_SMS_REPLIES = [json_text(t) for t in ("STOP", "YES", "Thanks!", "HELP")]
_SMS_ERRORS = [
    json_text({"status": 400, "message": msg, "code": code, "more_info": f"https://www.twilio.com/docs/errors/{code}"})
    for code, msg in ((30003, "Unreachable destination handset"), (30005, "Unknown destination handset"))
]
_PRODUCTS = [  # (price in cents, item JSON without its closing brace)
    (price, json_text({"id": sku, "sku": sku, "name": name, "categories": cats, "price": price / 100})[:-1])
    for sku, name, cats, price in (
        ("sku1", "Red Shirt", ["apparel"], 2500),
        ("sku2", "Blue Jeans", ["apparel", "denim"], 5999),
        ("sku3", "Café Mug", ["kitchen"], 1250),
    )
]
_PURCHASE_FIELDS = [json_text(f) for f in ({"storeId": "web"}, {"storeId": "ios-app", "couponCode": "SPRING"}, {})]
_CUSTOM_EVENTS = [
    f',"eventName":{json_text(name)},"dataFields":{json_text(fields)}'
    for name, fields in (
        ("appOpened", {"screen": "home", "appVersion": "5.2.1"}),
        ("productViewed", {"sku": "sku2", "price": 59.99, "categories": ["apparel", "denim"]}),
        ("updateCart", {"updatedShoppingCartItems": [{"id": "sku1", "name": "Red Shirt", "price": 25, "quantity": 2}]}),
        ("formSubmitted", {"form": {"name": "newsletter", "fields": 3}, "consent": True}),
    )
]


def _pick(r, options):
    return options[int(r.random() * len(options))]


def _uuid(r) -> str:
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@lru_cache(maxsize=1024)
def _month_later(d: str) -> str:
    return (date.fromisoformat(d) + timedelta(days=30)).isoformat()


def _who(d, s, u) -> str:
    """The recipient (email and/or userId) and createdAt members (no braces)."""
    return f'{u[2]}"createdAt":"{d} {_HMS[s]} +00:00"'


def _msg(r, d, s, u, c) -> str:
    """_who plus the campaign, template and message ids."""
    return f'{_who(d, s, u)},"campaignId":{c[0]},"templateId":{c[1]},"messageId":"{r.getrandbits(128):032x}"'


def _ids(c) -> str:
    return f',"messageTypeId":{c[2]},"channelId":{c[3]},"contentId":{c[4]}'


def _message_event(r, d, t, s, u, c):
    """Types without a dedicated builder (embedded*, whatsApp*, rcs*, inAppRecall, journeyExit, anonSession)."""
    return f"{{{_msg(r, d, s, u, c)}{_ids(c)}}}\n" if c else f"{{{_who(d, s, u)}}}\n"


def _send_skip(r, d, t, s, u, c):
    """Skips with no captured example (in-app, embedded, RCS, WhatsApp): the send's members and a reason."""
    return f'{{{_msg(r, d, s, u, c)}{_ids(c)},"reason":{_pick(r, _CHANNEL_SKIP_REASONS)}}}\n'


def _push_send(r, d, t, s, u, c):
    return (
        f'{{{_msg(r, d, s, u, c)}{_ids(c)},"platformEndpoint":{u[7]},"notificationsEnabled":'
        f'{_BOOL[r.random() < 0.95]},"isGhostPush":false,"pushMessage":{_pick(r, _PUSH_MESSAGES)}{_CATALOG}}}\n'
    )


def _push_open(r, d, t, s, u, c):
    return f'{{{_msg(r, d, s, u, c)},"appAlreadyRunning":{_BOOL[r.random() < 0.3]},"actionIdentifier":"default"}}\n'


def _push_bounce(r, d, t, s, u, c):
    return f'{{{_msg(r, d, s, u, c)},"messageTypeId":{c[2]},"channelId":{c[3]},"platformEndpoint":{u[7]}}}\n'


def _push_uninstall(r, d, t, s, u, c):
    return f'{{{_msg(r, d, s, u, c)},"platformEndpoint":{u[7]},"isGhostPush":{_BOOL[r.random() < 0.5]}}}\n'


def _web_push_send(r, d, t, s, u, c):
    return f'{{{_msg(r, d, s, u, c)}{_ids(c)},"browserToken":{u[8]}{_pick(r, _WEB_PUSHES)}{_CATALOG}}}\n'


def _web_push_click(r, d, t, s, u, c):
    return f'{{{_pick(r, _AGENTS)}{_msg(r, d, s, u, c)},"url":{_pick(r, _URLS)}}}\n'


def _in_app_send(r, d, t, s, u, c):
    return (
        f'{{{_msg(r, d, s, u, c)}{_ids(c)},"expiresAt":"{_month_later(d)} {_HMS[s]} +00:00",'
        f'"priorityLevel":{_pick(r, _PRIORITIES)},"messageContext":{_pick(r, _CONTEXTS)},'
        f'"inAppBody":{_pick(r, _IN_APP_BODIES)}{_CATALOG}}}\n'
    )


def _in_app(r, d, s, u, c) -> str:
    """Members shared by in-app engagement events (no braces)."""
    return (
        f'{_msg(r, d, s, u, c)},"expiresAt":"{_month_later(d)} {_HMS[s]} +00:00","deviceInfo":{u[6]},'
        f'"messageContext":{_pick(r, _CONTEXTS)}'
    )


def _in_app_event(r, d, t, s, u, c):
    return f"{{{_in_app(r, d, s, u, c)}}}\n"


def _in_app_click(r, d, t, s, u, c):
    return f'{{{_in_app(r, d, s, u, c)},"clickedUrl":{_pick(r, _URLS)}}}\n'


def _in_app_close(r, d, t, s, u, c):
    x = r.random()
    if x < 0.3:
        return f'{{{_in_app(r, d, s, u, c)},"closeAction":"link","clickedUrl":{_URLS[int(x * 10)]}}}\n'
    action = "back" if x < 0.9 else "unknown"
    return f'{{{_in_app(r, d, s, u, c)},"closeAction":"{action}"}}\n'


def _in_app_delete(r, d, t, s, u, c):
    return f'{{{_in_app(r, d, s, u, c)},"deleteAction":{_pick(r, _DELETE_ACTIONS)}}}\n'


def _impression(r) -> str:
    return (
        f'"messageId":"{r.getrandbits(128):032x}","silentInbox":{_BOOL[r.random() < 0.2]},'
        f'"displayCount":{r.randint(1, 3)},"displayDuration":{r.randint(5, 600) / 10}'
    )


def _inbox_session(r, d, t, s, u, c):
    begin, total = max(0, s - r.randint(5, 600)), r.randint(1, 12)
    unread = r.randint(0, total)
    impressions = ",".join("{" + _impression(r) + "}" for _ in range(r.randint(0, 3)))
    return (
        f'{{{_who(d, s, u)},"inboxSessionId":"{_uuid(r)}","inboxSessionStart":"{d} {_HMS[begin]} +00:00",'
        f'"inboxSessionEnd":"{d} {_HMS[s]} +00:00","startTotalMessageCount":{total},'
        f'"startUnreadMessageCount":{unread},"endTotalMessageCount":{total},'
        f'"endUnreadMessageCount":{r.randint(0, unread)},"impressions":[{impressions}],"deviceInfo":{u[6]}}}\n'
    )


def _inbox_message_impression(r, d, t, s, u, c):
    return (
        f'{{{_who(d, s, u)},"campaignId":{c[0]},"templateId":{c[1]},{_impression(r)},'
        f'"inboxSessionId":"{_uuid(r)}","deviceInfo":{u[6]}}}\n'
    )


def _sms_send(r, d, t, s, u, c):
    return (
        f'{{{_msg(r, d, s, u, c)}{_ids(c)},"toPhoneNumber":{u[5]},"fromSMSSenderId":{_SMS_SENDER_ID},'
        f'"smsSendCount":1,"mmsSendCount":0,"isSMSEstimation":false,"smsMessage":{_pick(r, _SMS_TEXTS)},'
        f'"messageBusId":"SM{r.getrandbits(128):032x}"{_CATALOG}}}\n'
    )


def _sms_bounce(r, d, t, s, u, c):
    return (
        f'{{{_msg(r, d, s, u, c)}{_ids(c)},"toPhoneNumber":{u[5]},"fromSMSSenderId":{_SMS_SENDER_ID},'
        f'"smsMessage":{_pick(r, _SMS_TEXTS)},"smsProviderResponse":{_pick(r, _SMS_ERRORS)}}}\n'
    )


def _sms_click(r, d, t, s, u, c):
    return (
        f'{{{_msg(r, d, s, u, c)}{_ids(c)},"smsMessage":{_pick(r, _SMS_TEXTS)},'
        f'"messageBusId":"SM{r.getrandbits(128):032x}"}}\n'
    )


def _sms_received(r, d, t, s, u, c):
    return (
        f'{{{_who(d, s, u)},"fromPhoneNumber":{u[5]},"toPhoneNumber":"+15550100000",'
        f'"smsMessage":{_pick(r, _SMS_REPLIES)},"smsReceiveCount":1,"mmsReceiveCount":0,'
        f'"recipientCountryName":"United States","recipientCountryCallingCode":"1"}}\n'
    )


def _sms_usage_info(r, d, t, s, u, c):
    return (
        f'{{{_msg(r, d, s, u, c)},"toPhoneNumber":{u[5]},"smsSendCount":{1 + (r.random() < 0.1)},'
        f'"mmsSendCount":0,"recipientCountryName":"United States","billingParty":"Iterable"}}\n'
    )


def _purchase(r, d, t, s, u, c):
    cents, items = 0, []
    for _ in range(1 + int(r.random() * 3)):
        price, item = _pick(r, _PRODUCTS)
        quantity = 1 + int(r.random() * 2)
        cents += price * quantity
        items.append(f'{item},"quantity":{quantity}}}')
    attribution = f',"campaignId":{c[0]},"templateId":{c[1]}' if r.random() < 0.4 else ""
    return (
        f'{{{_who(d, s, u)},"id":"{r.getrandbits(64):016x}","total":{cents // 100}.{cents % 100:02d},'
        f'"shoppingCartItems":[{",".join(items)}],"dataFields":{_pick(r, _PURCHASE_FIELDS)}{attribution}}}\n'
    )


def _custom_event(r, d, t, s, u, c):
    attribution = f',"campaignId":{c[0]},"templateId":{c[1]}' if r.random() < 0.2 else ""
    return f"{{{_who(d, s, u)}{_pick(r, _CUSTOM_EVENTS)}{attribution}}}\n"


def _hosted_unsubscribe_click(r, d, t, s, u, c):
    return (
        f'{{{_pick(r, _LOCATIONS)}"ip":{u[1]},{_pick(r, _AGENTS)}{_msg(r, d, s, u, c)},'
        f'"url":"https://links.iterable.com/e/unsubscribe?_t={r.getrandbits(64):016x}"}}\n'
    )


# ---- the registry ---------------------------------------------------------------------------

_DAY = 86400


class EventType(NamedTuple):
    build: Callable[..., str]
    scale: float  # daily volume relative to SimulatorConfig.events_per_day
    medium: str | None  # messageMedium of the campaigns the events reference; None: no campaign
    email_only: bool = False  # only users with an email address get them
    # The share of records that answer an earlier emailSend (its messageId, recipient, campaign, template and
    # content), and how long after it they come at most (a day or more: on later days too).
    chained: float = 0.0
    delay: int = 0


_email_send_skip = _skip(_SKIP_REASONS)
_sparse_send_skip = _skip(_CHANNEL_SKIP_REASONS)

# Every export dataTypeName in Iterable's own client (Iterable/api-client src/types/export.ts) except "user".
# Channels without a campaign medium of their own reuse the nearest one (embedded: InApp; WhatsApp, RCS: SMS);
# purchase, customEvent and hostedUnsubscribeClick attribute to Email campaigns.
EVENT_TYPES: dict[str, EventType] = {
    "emailSend": EventType(_email_send, 1.0, "Email", True),
    "emailOpen": EventType(_email_open, 0.5, "Email", True, 1.0, 3 * _DAY),
    "emailClick": EventType(_email_click, 0.2, "Email", True, 1.0, 3 * _DAY),
    "emailBounce": EventType(_email_bounce, 0.05, "Email", True, 1.0, 600),
    "emailComplaint": EventType(_email_complaint, 0.01, "Email", True, 1.0, 3 * _DAY),
    "emailSendSkip": EventType(_email_send_skip, 0.05, "Email", True),
    "emailSubscribe": EventType(_email_subscribe, 0.1, "Email", True),
    "emailUnsubscribe": EventType(_email_unsubscribe, 0.05, "Email", True, 0.3, 600),  # the hard bounces
    "hostedUnsubscribeClick": EventType(_hosted_unsubscribe_click, 0.02, "Email", True),
    "pushSend": EventType(_push_send, 0.4, "Push"),
    "pushSendSkip": EventType(_sparse_send_skip, 0.02, "Push"),
    "pushOpen": EventType(_push_open, 0.1, "Push"),
    "pushBounce": EventType(_push_bounce, 0.02, "Push"),
    "pushUninstall": EventType(_push_uninstall, 0.02, "Push"),
    "webPushSend": EventType(_web_push_send, 0.1, "WebPush"),
    "webPushClick": EventType(_web_push_click, 0.03, "WebPush"),
    "webPushSendSkip": EventType(_sparse_send_skip, 0.02, "WebPush"),
    "inAppSend": EventType(_in_app_send, 0.3, "InApp"),
    "inAppDelivery": EventType(_in_app_event, 0.25, "InApp"),
    "inAppOpen": EventType(_in_app_event, 0.15, "InApp"),
    "inAppClick": EventType(_in_app_click, 0.05, "InApp"),
    "inAppClose": EventType(_in_app_close, 0.1, "InApp"),
    "inAppDelete": EventType(_in_app_delete, 0.03, "InApp"),
    "inAppSendSkip": EventType(_send_skip, 0.02, "InApp"),
    "inAppRecall": EventType(_message_event, 0.02, "InApp"),
    "inboxSession": EventType(_inbox_session, 0.05, None),
    "inboxMessageImpression": EventType(_inbox_message_impression, 0.1, "InApp"),
    "smsSend": EventType(_sms_send, 0.2, "SMS"),
    "smsBounce": EventType(_sms_bounce, 0.02, "SMS"),
    "smsClick": EventType(_sms_click, 0.03, "SMS"),
    "smsReceived": EventType(_sms_received, 0.03, None),
    "smsSendSkip": EventType(_sparse_send_skip, 0.02, "SMS"),
    "smsUsageInfo": EventType(_sms_usage_info, 0.2, "SMS"),
    "purchase": EventType(_purchase, 0.05, "Email"),
    "customEvent": EventType(_custom_event, 0.3, "Email"),
    "embeddedSend": EventType(_message_event, 0.05, "InApp"),
    "embeddedSendSkip": EventType(_send_skip, 0.02, "InApp"),
    "embeddedReceived": EventType(_message_event, 0.05, "InApp"),
    "embeddedImpression": EventType(_message_event, 0.05, "InApp"),
    "embeddedClick": EventType(_message_event, 0.02, "InApp"),
    "embeddedSession": EventType(_message_event, 0.02, None),
    "anonSession": EventType(_message_event, 0.02, None),
    "journeyExit": EventType(_message_event, 0.02, None),
    "rcsSend": EventType(_message_event, 0.02, "SMS"),
    "rcsSendSkip": EventType(_send_skip, 0.02, "SMS"),
    "whatsAppSend": EventType(_message_event, 0.05, "SMS"),
    "whatsAppSendSkip": EventType(_send_skip, 0.02, "SMS"),
    "whatsAppBounce": EventType(_message_event, 0.02, "SMS"),
    "whatsAppClick": EventType(_message_event, 0.02, "SMS"),
    "whatsAppReceived": EventType(_message_event, 0.02, "SMS"),
    "whatsAppSeen": EventType(_message_event, 0.03, "SMS"),
    "whatsAppUsageInfo": EventType(_message_event, 0.05, "SMS"),
}
EXPORT_DATA_TYPES = (*EVENT_TYPES, "user")
# Case-insensitive lookup; the spec's "emailUnSubscribe" lowercases to the same key.
_CANONICAL = {name.lower(): name for name in EXPORT_DATA_TYPES}


def canonical_data_type(name: str) -> str:
    """The canonical export dataTypeName for ``name`` (case-insensitive); ValueError if unknown."""
    try:
        return _CANONICAL[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dataTypeName {name!r}") from None


class Tally:
    """What campaign metrics count of one campaign's events of one type: events, distinct recipients, the sum of
    their `total` amounts, and the same counts without machine opens (Apple Mail Privacy Protection)."""

    __slots__ = ("events", "whos", "cents", "human", "human_whos")

    def __init__(self):
        self.events, self.whos, self.cents, self.human, self.human_whos = 0, set(), 0, 0, set()

    def add(self, who: str | None, cents: int, machine: bool) -> None:
        self.events += 1
        self.whos.add(who)
        self.cents += cents
        if not machine:
            self.human += 1
            self.human_whos.add(who)


class Metric(NamedTuple):
    column: str  # as in Iterable's GET /api/campaigns/metrics CSV header
    medium: str | None  # the messageMedium of the campaigns that have the column; None: every campaign
    data_types: tuple[str, ...]  # the export events it counts (those carrying the campaign's id)
    value: Callable[..., int | float]  # of one Tally per data type; a float is written as a decimal ("0.0")


def _total(column: str, medium: str | None, data_type: str) -> Metric:
    return Metric(column, medium, (data_type,), lambda x: x.events)


def _unique(column: str, medium: str | None, data_type: str) -> Metric:
    return Metric(column, medium, (data_type,), lambda x: len(x.whos))


def _ratio(numerator: float, denominator: int) -> float:
    return round(numerator / denominator, 2) if denominator else 0.0


def _per_mille(medium: str, sends: str) -> tuple[Metric, ...]:
    """Purchases and revenue per thousand messages sent."""
    types = ("purchase", sends)
    return (
        Metric(f"Purchases / M ({medium})", medium, types, lambda p, s: _ratio(p.events * 1000, s.events)),
        Metric(f"Revenue / M ({medium})", medium, types, lambda p, s: _ratio(p.cents * 10, s.events)),
    )


def _delivered(medium: str, noun: str, sends: str, bounces: str) -> tuple[Metric, ...]:
    """Sends minus bounces (Iterable's own rows can go negative, hence no clamp); decimals in captured rows."""
    return (
        Metric(f"Total {noun} Delivered", medium, (sends, bounces), lambda s, b: float(s.events - b.events)),
        Metric(f"Unique {noun} Delivered", medium, (sends, bounces), lambda s, b: float(len(s.whos) - len(b.whos))),
    )


def _holdout(column: str, medium: str) -> Metric:
    return Metric(column, medium, (), lambda: 0)  # the simulated campaigns have no holdout group


# The columns and formats of captured rows (Airbyte's expected records of 2023: integers for counts, decimals
# such as "0.0" for amounts, averages, per-mille rates and deliveries): the first ten on every campaign, then
# each medium's own. The Hosted Unsubscribe columns are from a Data Studio connector's field list (no
# captured row has them); the in-app and SMS names are unconfirmed guesses.
METRICS = (
    Metric("Average Custom Conversion Value", None, ("customEvent",), lambda x: _ratio(x.cents / 100, x.events)),
    Metric("Average Order Value", None, ("purchase",), lambda x: _ratio(x.cents / 100, x.events)),
    Metric("Revenue", None, ("purchase",), lambda x: x.cents / 100),
    Metric("Sum of Custom Conversions", None, ("customEvent",), lambda x: x.cents / 100),
    _total("Total Custom Conversions", None, "customEvent"),
    _total("Total Purchases", None, "purchase"),
    _total("Total Unsubscribes", None, "emailUnsubscribe"),
    _unique("Unique Custom Conversions", None, "customEvent"),
    _unique("Unique Purchases", None, "purchase"),
    _unique("Unique Unsubscribes", None, "emailUnsubscribe"),
    *_per_mille("Email", "emailSend"),
    _total("Total Complaints", "Email", "emailComplaint"),
    _holdout("Total Email Holdout", "Email"),
    _total("Total Email Opens", "Email", "emailOpen"),
    Metric("Total Email Opens (filtered)", "Email", ("emailOpen",), lambda x: x.human),
    _total("Total Email Send Skips", "Email", "emailSendSkip"),
    _total("Total Email Sends", "Email", "emailSend"),
    _total("Total Emails Bounced", "Email", "emailBounce"),
    _total("Total Emails Clicked", "Email", "emailClick"),
    *_delivered("Email", "Emails", "emailSend", "emailBounce"),
    _unique("Unique Email Clicks", "Email", "emailClick"),
    _unique("Unique Email Opens", "Email", "emailOpen"),
    Metric("Unique Email Opens (filtered)", "Email", ("emailOpen",), lambda x: len(x.human_whos)),
    Metric("Unique Email Opens Or Clicks", "Email", ("emailOpen", "emailClick"), lambda o, c: len(o.whos | c.whos)),
    _unique("Unique Email Sends", "Email", "emailSend"),
    _unique("Unique Emails Bounced", "Email", "emailBounce"),
    _total("Total Hosted Unsubscribe Clicks", "Email", "hostedUnsubscribeClick"),
    _unique("Unique Hosted Unsubscribe Clicks", "Email", "hostedUnsubscribeClick"),
    *_per_mille("Push", "pushSend"),
    _total("Total App Uninstalls", "Push", "pushUninstall"),
    _holdout("Total Push Holdout", "Push"),
    _total("Total Push Send Skips", "Push", "pushSendSkip"),
    _total("Total Pushes Bounced", "Push", "pushBounce"),
    *_delivered("Push", "Pushes", "pushSend", "pushBounce"),
    _total("Total Pushes Opened", "Push", "pushOpen"),
    _total("Total Pushes Sent", "Push", "pushSend"),
    _unique("Unique Pushes Bounced", "Push", "pushBounce"),
    _unique("Unique Pushes Opened", "Push", "pushOpen"),
    _unique("Unique Pushes Sent", "Push", "pushSend"),
    _total("Total Web Push Clicks", "WebPush", "webPushClick"),
    _total("Total Web Push Send Skips", "WebPush", "webPushSendSkip"),
    _total("Total Web Pushes Sent", "WebPush", "webPushSend"),
    _holdout("Total WebPush Holdout", "WebPush"),
    _unique("Unique Web Push Clicks", "WebPush", "webPushClick"),
    _unique("Unique Web Pushes Sent", "WebPush", "webPushSend"),
    _total("Total In-App Sends", "InApp", "inAppSend"),
    _unique("Unique In-App Sends", "InApp", "inAppSend"),
    _total("Total In-App Opens", "InApp", "inAppOpen"),
    _unique("Unique In-App Opens", "InApp", "inAppOpen"),
    _total("Total In-App Clicks", "InApp", "inAppClick"),
    _unique("Unique In-App Clicks", "InApp", "inAppClick"),
    _total("Total In-App Closes", "InApp", "inAppClose"),
    _total("Total In-App Deletes", "InApp", "inAppDelete"),
    _total("Total In-App Send Skips", "InApp", "inAppSendSkip"),
    _total("Total Inbox Impressions", "InApp", "inboxMessageImpression"),
    _total("Total SMS Sent", "SMS", "smsSend"),
    _unique("Unique SMS Sent", "SMS", "smsSend"),
    _total("Total SMS Bounced", "SMS", "smsBounce"),
    _total("Total SMS Clicks", "SMS", "smsClick"),
    _unique("Unique SMS Clicks", "SMS", "smsClick"),
    _total("Total SMS Send Skips", "SMS", "smsSendSkip"),
)
METRIC_DATA_TYPES = tuple(dict.fromkeys(t for m in METRICS for t in m.data_types))
