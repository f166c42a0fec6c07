"""The acknowledgement page a notification's link opens (``/ack/<token>``).

``GET`` shows the alert and one button; only the button's ``POST`` acknowledges, so a
link preview, a mail scanner or a prefetching browser that fetches the link changes
nothing. The token is the credential (``agent.notify.acks``): no login is asked, the
phone that got the message is the one that knows the link. The ``POST`` is refused
from another site's page (``Origin`` / ``Sec-Fetch-Site``), like every write of the
dashboard. Expired, used, forged or malformed links, and alerts already acknowledged
or resolved, get a page that says so plainly.

Pages are Portuguese (pt-BR), English with ``?lang=en`` or a browser that prefers
English. They carry no script and no inline style (the dashboard's Content-Security-
Policy applies): a small stylesheet is served at ``/ack.css``.
"""

from __future__ import annotations

import html

from aiohttp import web

from coffee_telemetry.agent.notify.service import AckResult, Notifier
from coffee_telemetry.agent.notify.texts import rule_label, severity_label

__all__ = ["add_ack_routes"]

_NOTIFIER = web.AppKey("notifier", Notifier)
#: Longest token read from a path.
MAX_PATH_TOKEN = 1024

CSS = """body{font-family:system-ui,sans-serif;margin:0;padding:1.5rem;background:#f4f1ea;
color:#222}main{max-width:32rem;margin:auto;background:#fff;padding:1.5rem;
border-radius:.5rem;box-shadow:0 1px 4px #0002}h1{font-size:1.3rem}.sev{font-weight:bold;
color:#b00020}button{font-size:1.2rem;padding:.8rem 1.6rem;background:#b00020;color:#fff;
border:0;border-radius:.4rem;width:100%}.ok{color:#1b5e20}.no{color:#b00020}"""

_TEXT = {
    "pt-BR": {
        "title": "Reconhecer alerta",
        "button": "Reconhecer este alerta",
        "as": "Você reconhece como",
        "acknowledged": (
            "Alerta reconhecido. Obrigado, {contact}! Os demais contatos serão avisados."
        ),
        "malformed": "Este link não é um link de reconhecimento válido.",
        "forged": "Este link não é válido (alterado ou de outro equipamento).",
        "expired": "Este link expirou. Reconheça o alerta pelo painel ou pelo código do SMS.",
        "used": "Este link já foi usado.",
        "closed": "Este alerta já foi reconhecido ou resolvido.",
        "failed": "Não foi possível reconhecer o alerta: {detail}",
        "cross": "Pedido recusado: veio de outra página.",
    },
    "en": {
        "title": "Acknowledge alert",
        "button": "Acknowledge this alert",
        "as": "You acknowledge as",
        "acknowledged": "Alert acknowledged. Thank you, {contact}! The other contacts are told.",
        "malformed": "This is not a valid acknowledgement link.",
        "forged": "This link is not valid (changed, or from another agent).",
        "expired": "This link has expired. Acknowledge from the dashboard or the SMS code.",
        "used": "This link was used already.",
        "closed": "This alert was already acknowledged or resolved.",
        "failed": "The alert could not be acknowledged: {detail}",
        "cross": "Request refused: it came from another page.",
    },
}
_STATUS = {
    "acknowledged": 200,
    "pending": 200,
    "malformed": 400,
    "forged": 403,
    "expired": 410,
    "used": 410,
    "closed": 409,
    "failed": 409,
}


def _lang(request: web.Request) -> str:
    asked = request.query.get("lang") or request.headers.get("Accept-Language") or ""
    return "en" if asked.lower().startswith("en") else "pt-BR"


def _page(lang: str, body: str, status: int) -> web.Response:
    t = _TEXT[lang]
    doc = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f'<link rel="stylesheet" href="/ack.css"><title>{t["title"]}</title></head>'
        f"<body><main>{body}</main></body></html>"
    )
    return web.Response(
        text=doc,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _result_page(lang: str, result: AckResult) -> web.Response:
    t = _TEXT[lang]
    text = t.get(result.status, t["malformed"]).format(
        contact=html.escape(result.contact or ""), detail=html.escape(result.detail)
    )
    css = "ok" if result.ok else "no"
    return _page(lang, f'<h1>{t["title"]}</h1><p class="{css}">{text}</p>', _STATUS[result.status])


def _token(request: web.Request) -> str:
    return request.match_info.get("token", "")[: MAX_PATH_TOKEN + 1]


async def ack_form(request: web.Request) -> web.Response:
    """The alert and its button (a valid link), or why the link is refused."""
    lang = _lang(request)
    result, alert = await request.app[_NOTIFIER].inspect_token(_token(request))
    if alert is None or result.status != "pending":
        return _result_page(lang, result)
    t = _TEXT[lang]
    message = html.escape(alert.message(lang))
    head = f"{rule_label(alert.rule, lang)}: {alert.subject}"
    body = (
        f'<h1>{html.escape(head)}</h1><p class="sev">{severity_label(alert.severity, lang)}</p>'
        f"<p>{message}</p><p>{t['as']} <b>{html.escape(result.contact or '')}</b>.</p>"
        f'<form method="post"><button type="submit">{t["button"]}</button></form>'
    )
    return _page(lang, body, 200)


async def ack_post(request: web.Request) -> web.Response:
    """Acknowledge (the button)."""
    lang = _lang(request)
    site = request.headers.get("Sec-Fetch-Site", "same-origin")
    origin = request.headers.get("Origin")
    if site not in ("same-origin", "none") or (
        origin is not None and origin != f"{request.scheme}://{request.host}"
    ):
        return _page(lang, f'<p class="no">{_TEXT[lang]["cross"]}</p>', 403)
    result = await request.app[_NOTIFIER].acknowledge_token(_token(request))
    return _result_page(lang, result)


async def stylesheet(request: web.Request) -> web.Response:
    """The pages' stylesheet."""
    return web.Response(
        text=CSS, content_type="text/css", headers={"Cache-Control": "max-age=86400"}
    )


def add_ack_routes(app: web.Application, notifier: Notifier) -> None:
    """Serve ``GET``/``POST /ack/{token}`` and ``/ack.css`` from ``app``."""
    app[_NOTIFIER] = notifier
    app.router.add_get("/ack/{token}", ack_form)
    app.router.add_post("/ack/{token}", ack_post)
    app.router.add_get("/ack.css", stylesheet)
