"""Where the API lives and how to authenticate: provider presets and :func:`resolve_api`.

Two presets speak the same queue protocol (see PROTOCOL.md):

============  ============================  =========  =============================================
provider      base URL                      header     key looked up in (first non-blank wins)
============  ============================  =========  =============================================
quickrouter   https://api.quickrouter.ai    Bearer     BATCHRUNNER_API_KEY, QUICKROUTER_API_KEY
fal           https://queue.fal.run         Key        BATCHRUNNER_API_KEY, FAL_KEY
============  ============================  =========  =============================================

:class:`ApiConfig` is the resolved answer. Building one validates and normalises the base URL
(lower-case host, default port dropped, no trailing slash), so every ``ApiConfig`` in the program
has an :attr:`ApiConfig.origin` the queue client can compare request URLs against. The token is
kept out of ``repr``/``str``; nothing in this module puts it in a message.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from batchrunner.errors import UsageError

if TYPE_CHECKING:
    import httpx

AuthScheme = Literal["bearer", "key"]
AUTH_SCHEMES: tuple[AuthScheme, ...] = ("bearer", "key")
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Provider:
    """A preset: where a provider's queue API is and how it wants the key."""

    name: str
    base_url: str
    auth_scheme: AuthScheme
    key_env: tuple[str, ...]  # environment variables to look in, in order


PROVIDERS: dict[str, Provider] = {
    "quickrouter": Provider(
        "quickrouter",
        "https://api.quickrouter.ai",
        "bearer",
        ("BATCHRUNNER_API_KEY", "QUICKROUTER_API_KEY"),
    ),
    "fal": Provider("fal", "https://queue.fal.run", "key", ("BATCHRUNNER_API_KEY", "FAL_KEY")),
}


def origin_of(url: str | httpx.URL) -> str:
    """``scheme://host[:port]`` of an absolute URL: lower-case, default port dropped.

    The one definition of "same origin" in batchrunner: the queue client's auth guard compares
    these strings. IPv6 hosts are bracketed. Raises ``ValueError`` for a relative URL.
    """
    import httpx  # not at the top: `batchrunner --help` and `validate` never need it

    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    scheme, host = parsed.scheme.lower(), parsed.host.lower()
    if not scheme or not host:
        raise ValueError(f"not an absolute URL: {str(parsed)[:100]!r}")
    port = parsed.port
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}" + (f":{port}" if port is not None else "")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ``::1``)."""
    host = host.lower().strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base_url(base_url: str) -> str:
    """Validate ``base_url`` and return ``origin + path prefix`` without a trailing slash.

    Raises :class:`UsageError` (one line) for anything the token must not be sent to.
    """
    import httpx

    text = base_url.strip()
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise UsageError(f"invalid API base URL {text[:100]!r}: {exc}") from None
    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS or not url.host:
        bare = "://" not in text and bool(text)  # a host (and port) without its scheme
        host = text.partition("/")[0].rpartition(":")[0] or text.partition("/")[0]
        scheme = "http" if is_loopback(host) else "https"
        hint = f": write {scheme}://{text[:100]}" if bare else ""
        raise UsageError(f"the API base URL must be an http(s) URL, got {text[:100]!r}{hint}")
    if url.port is not None and not 0 < url.port < 65536:  # waited 10 s for "refused"
        raise UsageError(f"the API base URL's port {url.port} is not one (1 to 65535)")
    if url.userinfo:
        raise UsageError("the API base URL must not contain a user name or password")
    if url.query or url.fragment:
        raise UsageError("the API base URL must not contain a query (?...) or fragment (#...)")
    if scheme == "http" and not is_loopback(url.host):
        raise UsageError(
            "http:// is only allowed for loopback addresses (127.0.0.1, ::1, localhost); "
            "use https://"
        )
    path = url.path.rstrip("/")
    named = _MODEL_IN_PATH.search(path)
    if named:  # an endpoint's URL pasted as the base: every request would be a 404
        raise UsageError(
            f"the API base URL {text[:100]!r} names a model ({path[named.start() + 1 :]}): "
            f"give the API's address alone, {origin_of(url)}{path[: named.start()]}, and the "
            "model with --model or a manifest's model column"
        )
    return origin_of(url) + path


# a path that holds an endpoint id (fal-ai/veo3/...): the model, not a reseller's prefix
_MODEL_IN_PATH = re.compile(r"/fal-ai(?:/|$)")


def _check_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise UsageError(f"the API key {source} is empty")
    scheme, _, rest = token.partition(" ")
    if scheme.lower() in ("key", "bearer") and rest.strip():  # the header's value, pasted
        raise UsageError(
            f"the API key {source} starts with {scheme!r}: give the key alone, batchrunner "
            "adds the scheme (--auth-scheme)"
        )
    if len(token) > 1 and token[0] == token[-1] and token[0] in "'\"":
        raise UsageError(  # `export KEY='"sk-..."'`, or quotes kept by a .env loader
            f"the API key {source} is wrapped in quotes ({token[0]}...{token[0]}): give the key "
            "without them"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise UsageError(f"the API key {source} contains spaces or control characters")
    foreign = next((ch for ch in token if not ch.isascii()), None)
    if foreign is not None:  # “quotes”, a dash or a letter a word processor put there
        raise UsageError(
            f"the API key {source} contains {foreign!r} (U+{ord(foreign):04X}), which no "
            "HTTP header can carry: copy the key again as plain text"
        )
    return token


@dataclass(frozen=True)
class ApiConfig:
    """A resolved API: normalised base URL, auth scheme and token (never shown).

    Constructing one directly (tests, the simulator) validates it like :func:`resolve_api`.
    """

    base_url: str  # normalised origin + optional path prefix, no trailing slash
    auth_scheme: AuthScheme
    token: str = field(repr=False)
    provider: str = "quickrouter"
    key_source: str = "the API key"  # where the key came from, to name in messages: FAL_KEY

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", normalise_base_url(self.base_url))
        scheme = str(self.auth_scheme).lower()
        if scheme not in AUTH_SCHEMES:
            raise UsageError(f"unknown auth scheme {self.auth_scheme!r}; use bearer or key")
        object.__setattr__(self, "auth_scheme", scheme)
        object.__setattr__(self, "token", _check_token(self.token, "in the configuration"))

    @functools.cached_property
    def origin(self) -> str:
        """``scheme://host[:port]``: the only origin that ever receives the token."""
        return origin_of(self.base_url)

    @property
    def path_prefix(self) -> str:
        """The base URL's path ("" or ``/something``), prepended to every API path."""
        return self.base_url[len(self.origin) :]

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value; only the client's auth guard should read it."""
        prefix = "Bearer" if self.auth_scheme == "bearer" else "Key"
        return f"{prefix} {self.token}"


def resolve_api(
    provider: str = "quickrouter",
    *,
    base_url: str | None = None,
    auth_scheme: str | None = None,
    token: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> ApiConfig:
    """The :class:`ApiConfig` for ``provider``, with overrides; raises :class:`UsageError`.

    ``token`` wins over the environment. Otherwise the provider's ``key_env`` variables are
    tried in order and the first non-blank one is used; if some are set but all blank, that is
    an error rather than a silent "no key".
    """
    preset = PROVIDERS.get(provider.strip().lower())
    if preset is None:
        allowed = ", ".join(sorted(PROVIDERS))
        raise UsageError(f"unknown provider {provider!r}; choose one of: {allowed}")
    if base_url is not None and not base_url.strip():  # "--base-url $UNSET_VARIABLE"
        raise UsageError(
            f"the API base URL is empty: give the address, or leave --base-url out for "
            f"{preset.name}'s own ({preset.base_url})"
        )
    scheme = (auth_scheme or preset.auth_scheme).strip().lower()
    if scheme not in AUTH_SCHEMES:
        raise UsageError(f"unknown auth scheme {auth_scheme!r}; use bearer or key")

    if token is not None:
        key, source = _check_token(token, "given"), "the key given"
    else:
        key, source = _key_from_env(preset, env)
    return ApiConfig(
        base_url=base_url or preset.base_url,
        auth_scheme=cast(AuthScheme, scheme),
        token=key,
        provider=preset.name,
        key_source=source,
    )


def _key_from_env(preset: Provider, env: Mapping[str, str]) -> tuple[str, str]:
    """The key and the name of the variable it came from."""
    blank = [name for name in preset.key_env if name in env and not env[name].strip()]
    for name in preset.key_env:
        if env.get(name, "").strip():
            return _check_token(env[name], f"in {name}"), name
    if blank:
        raise UsageError(f"the API key in {blank[0]} is empty")
    first, *others = preset.key_env
    alternatives = f" (or {' or '.join(others)})" if others else ""
    elsewhere = [  # another provider's key, set: the wrong --provider, most likely
        (name, other.name)
        for other in PROVIDERS.values()
        for name in other.key_env
        if other is not preset and name not in preset.key_env and env.get(name, "").strip()
    ]
    hint = (
        f"; {elsewhere[0][0]} is set, but it is {elsewhere[0][1]}'s key "
        f"(--provider {elsewhere[0][1]})"
        if elsewhere
        else ""
    )
    raise UsageError(f"no API key for {preset.name}: set {first}{alternatives}{hint}")
