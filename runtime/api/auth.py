"""Who may call the API: bearer tokens, each for one user and optionally one org and some sandboxes.

Tokens come from `--token TOKEN[=USER]`, MLRUNTIME_TOKENS (`tok1=user1,tok2=user2`) and a JSON or
YAML tokens file mapping a token either to a user id (any org and sandbox) or to a grant
`{"user": "bob", "org": "ORG@AdobeOrg", "sandboxes": ["sbx1", "sbx2"]}`. Without tokens the server
serves loopback clients only and refuses to bind any other address.
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import Forbidden, ServerConfigError, Unauthorized
from ..registry import DEFAULT_ORG, DEFAULT_SANDBOX, Caller
from ..store import Scope

ENV_TOKENS = "MLRUNTIME_TOKENS"
DEFAULT_TOKEN_USER = "api-user"
_GRANT_KEYS = ("user", "org", "sandboxes")


@dataclass(frozen=True)
class TokenGrant:
    """What one token may reach: `org` None means any org, `sandboxes` None any sandbox."""

    user: str
    org: Optional[str] = None
    sandboxes: Optional[tuple[str, ...]] = None

    def scope_for(self, org_header: Optional[str], sandbox_header: Optional[str]) -> Scope:
        """The scope a request asks for; a missing header means the token's own org (or `local`)
        and its first sandbox (or `prod`)."""
        org = org_header or self.org or DEFAULT_ORG
        sandbox = sandbox_header or (self.sandboxes[0] if self.sandboxes else DEFAULT_SANDBOX)
        return Scope(org, sandbox)

    def check(self, scope: Scope) -> None:
        if self.org is not None and scope.org != self.org:
            raise Forbidden(f"The token of user {self.user!r} may not reach org {scope.org!r}: "
                            f"it is limited to org {self.org!r}")
        if self.sandboxes is not None and scope.sandbox not in self.sandboxes:
            raise Forbidden(f"The token of user {self.user!r} may not reach sandbox "
                            f"{scope.sandbox!r}: it is limited to sandboxes "
                            f"{', '.join(repr(s) for s in self.sandboxes)}")


Tokens = Mapping[str, Union[str, TokenGrant]]


def as_grant(value: Union[str, TokenGrant]) -> TokenGrant:
    """A plain user id keeps its historical meaning: that user, any org, any sandbox."""
    return value if isinstance(value, TokenGrant) else TokenGrant(user=value)


def grant_from_entry(token: str, value: Any, source: str) -> TokenGrant:
    """One tokens-file entry (a user id or a grant object) as a TokenGrant; errors name the token's
    position by its user, never the token itself."""
    if isinstance(value, str):
        if not value.strip():
            raise ServerConfigError(f"{source}: a token maps to an empty user id")
        return TokenGrant(user=value.strip())
    if not isinstance(value, dict):
        raise ServerConfigError(f"{source}: each token must map to a user id or to an object "
                                f"{{\"user\", \"org\", \"sandboxes\"}}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(_GRANT_KEYS))
    user = value.get("user")
    who = f"user {user!r}" if isinstance(user, str) else "a token"
    if unknown:
        raise ServerConfigError(f"{source}: unknown key(s) {', '.join(unknown)} for {who}; "
                                f"allowed: {', '.join(_GRANT_KEYS)}")
    if not isinstance(user, str) or not user.strip():
        raise ServerConfigError(f"{source}: every token object needs a non-empty \"user\"")
    org = value.get("org")
    if org is not None and (not isinstance(org, str) or not org.strip()):
        raise ServerConfigError(f"{source}: \"org\" of {who} must be a non-empty string")
    sandboxes = value.get("sandboxes")
    if sandboxes is not None:
        if isinstance(sandboxes, str):
            sandboxes = [sandboxes]
        if (not isinstance(sandboxes, list) or not sandboxes
                or not all(isinstance(s, str) and s.strip() for s in sandboxes)):
            raise ServerConfigError(f"{source}: \"sandboxes\" of {who} must be a non-empty list "
                                    "of sandbox names")
        sandboxes = tuple(s.strip() for s in sandboxes)
    return TokenGrant(user=user.strip(), org=org.strip() if org else None, sandboxes=sandboxes)


def parse_tokens(flags: list[str], tokens_file: Optional[str] = None,
                 env: Optional[str] = None) -> dict[str, TokenGrant]:
    """token -> grant from `--token TOKEN[=USER]`, MLRUNTIME_TOKENS and a JSON/YAML tokens file."""
    tokens: dict[str, TokenGrant] = {}
    env = os.environ.get(ENV_TOKENS, "") if env is None else env
    for item in [*[e for e in env.split(",") if e.strip()], *flags]:
        token, _, user = item.strip().partition("=")
        if not token:
            raise ServerConfigError(f"Empty token in {item!r}: use --token TOKEN or TOKEN=USER")
        tokens[token] = TokenGrant(user=user.strip() or DEFAULT_TOKEN_USER)
    if tokens_file:
        path = Path(tokens_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ServerConfigError(f"Cannot read the tokens file {path}: {exc}") from exc
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:
            # The parser's message may quote a line of the file, i.e. a token: name the class only.
            raise ServerConfigError(f"The tokens file {path} is not valid "
                                    f"{'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}"
                                    f" ({type(exc).__name__})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
            raise ServerConfigError(f"The tokens file {path} must map each token to a user id or "
                                    "to an object {\"user\", \"org\", \"sandboxes\"}")
        for token, value in data.items():
            tokens[token] = grant_from_entry(token, value, f"The tokens file {path}")
    return tokens


@functools.lru_cache(maxsize=1024)   # parsing the address was a twentieth of a GET-by-id
def is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host == "localhost" or host == "testclient":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: Tokens) -> None:
    """Without tokens the server is for this machine only: refuse any non-loopback address."""
    if tokens:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ServerConfigError(
            f"Refusing to listen on {host!r} without tokens: anyone who reaches it could read and "
            "change the registry. Configure tokens (--token TOKEN=USER, --tokens-file FILE or "
            f"{ENV_TOKENS}) or bind 127.0.0.1")


def authenticate(tokens: Tokens, headers: Mapping[str, str], client_host: Optional[str],
                 local_user: str) -> Caller:
    """The caller of a request: its token's user and grant, or the local user on loopback when the
    server has no tokens. Refuses (401) a missing or unknown token and (403) a scope the token's
    grant does not reach."""
    org_header = headers.get("x-gw-ims-org-id") or None
    sandbox_header = headers.get("x-sandbox-name") or None
    if not tokens:
        if not is_loopback(client_host):
            raise Unauthorized("This server has no tokens configured and serves loopback "
                               "clients only; configure tokens to serve other hosts")
        return Caller(Scope(org_header or DEFAULT_ORG, sandbox_header or DEFAULT_SANDBOX),
                      local_user)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Missing bearer token: send 'Authorization: Bearer TOKEN'")
    found: Optional[TokenGrant] = None
    for known, value in tokens.items():   # compare every token: no early exit to time
        if hmac.compare_digest(known.encode(), token.encode()):
            found = as_grant(value)
    if found is None:
        raise Unauthorized("The bearer token is not valid for this server")
    scope = found.scope_for(org_header, sandbox_header)
    found.check(scope)
    return Caller(scope, found.user)

