"""The HTML of the emulator's Google sign-in: "Choose an account" and the error page.

Plain, escaped HTML; each account a submit button whose accessible name is its email (and a
``data-email`` attribute), so a person or a browser test picks one the same way.
"""

from __future__ import annotations

import html

from aiohttp import web

from emulator.config import OidcUser

AUTH_PATH = "/o/oauth2/v2/auth"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;"
          "padding:0 1rem}ul{list-style:none;padding:0}li{margin:.5rem 0}"
          "button{font:inherit;padding:.4rem .8rem;cursor:pointer}"
          "input{font:inherit;padding:.3rem;width:100%;box-sizing:border-box}"
          ".error{color:#b00020}")


def page(title: str, body: str, status: int) -> web.Response:
    text = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")
    return web.Response(text=text, status=status, content_type="text/html",
                        headers=dict(NO_STORE))


def error_page(error: str, description: str) -> web.Response:
    body = ("<h1>Access blocked: this app's request is invalid</h1>\n"
            f"<p><strong>Error 400: {html.escape(error)}</strong></p>\n"
            f'<p id="error-description">{html.escape(description)}</p>\n'
            "<p>This is the emulator's stand-in for Google sign-in; nothing was sent back "
            "to the app.</p>\n")
    return page("Error 400: " + error, body, 400)


def choose_page(client_id: str, users: list[OidcUser], hidden: list[tuple[str, str]],
                 other: str, problem: str | None) -> web.Response:
    e = html.escape
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">\n' for k, v in hidden)
    if users:
        items = "".join(
            f'<li><button type="submit" name="email" value="{e(u.email)}" '
            f'data-email="{e(u.email)}" aria-describedby="user-{i}-name">{e(u.email)}</button>'
            f' <span id="user-{i}-name">{e(u.display_name)}</span></li>\n'
            for i, u in enumerate(users))
        accounts = (f'<form method="post" action="{AUTH_PATH}">\n{fields}'
                    f'<ul aria-label="Accounts">\n{items}</ul>\n</form>\n')
    else:
        accounts = ("<p>No accounts are configured: add <code>users = [...]</code> under "
                    "<code>[oidc]</code> in the emulator's config, or use another account "
                    "below.</p>\n")
    error = (f'<p id="other-email-error" class="error" role="alert">{e(problem)}</p>\n'
             if problem else "")
    invalid = ' aria-invalid="true" aria-describedby="other-email-error"' if problem else ""
    body = (f"<h1>Choose an account</h1>\n<p>to continue to <strong>{e(client_id)}</strong>"
            " (local emulator of Google sign-in: no password is asked)</p>\n"
            f"{accounts}"
            f'<form method="post" action="{AUTH_PATH}">\n{fields}'
            '<p><label for="other-email">Use another account (email)</label></p>\n'
            f'<p><input id="other-email" name="email" type="email" required '
            f'autocomplete="email" value="{e(other)}"{invalid}></p>\n{error}'
            '<p><button type="submit">Sign in</button></p>\n</form>\n')
    return page("Sign in - Google Accounts (emulator)", body, 400 if problem else 200)
