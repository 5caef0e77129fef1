"""Provider presets and resolve_api: which URL, which header, which key, and clear refusals."""

from __future__ import annotations

import pytest

from batchrunner.errors import UsageError
from batchrunner.providers import PROVIDERS, ApiConfig, origin_of, resolve_api

TOKEN = "tok-SECRET-91c4e"


def resolve_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(UsageError) as info:
        resolve_api(*args, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message and TOKEN not in repr(info.value)
    return message


def test_quickrouter_is_the_default_with_a_bearer_token() -> None:
    api = resolve_api(env={"BATCHRUNNER_API_KEY": TOKEN})
    assert api.provider == "quickrouter"
    assert api.base_url == "https://api.quickrouter.ai"
    assert api.origin == "https://api.quickrouter.ai"
    assert api.authorization == f"Bearer {TOKEN}"


def test_fal_uses_its_queue_host_and_the_key_scheme() -> None:
    api = resolve_api("fal", env={"FAL_KEY": TOKEN})
    assert (api.provider, api.base_url) == ("fal", "https://queue.fal.run")
    assert api.authorization == f"Key {TOKEN}"


def test_key_variables_are_tried_in_order() -> None:
    env = {"QUICKROUTER_API_KEY": "second", "BATCHRUNNER_API_KEY": "first"}
    assert resolve_api(env=env).token == "first"
    assert resolve_api(env={"QUICKROUTER_API_KEY": "second"}).token == "second"
    # a blank first variable does not hide a real key in the next one
    assert resolve_api(env={"BATCHRUNNER_API_KEY": " ", "QUICKROUTER_API_KEY": "k2"}).token == "k2"


def test_token_argument_wins_over_the_environment() -> None:
    api = resolve_api(token=TOKEN, env={"BATCHRUNNER_API_KEY": "from-env"})
    assert api.token == TOKEN


def test_key_is_stripped_of_surrounding_whitespace() -> None:
    assert resolve_api(env={"BATCHRUNNER_API_KEY": f"  {TOKEN}\n"}).token == TOKEN


def test_overrides_for_base_url_and_auth_scheme() -> None:
    api = resolve_api(base_url="https://proxy.example.com/v1/", auth_scheme="KEY", token=TOKEN)
    assert api.base_url == "https://proxy.example.com/v1"
    assert api.origin == "https://proxy.example.com"
    assert api.path_prefix == "/v1"
    assert api.authorization == f"Key {TOKEN}"


def test_unknown_provider_lists_the_allowed_ones() -> None:
    message = resolve_error("openai", token=TOKEN)
    assert "unknown provider 'openai'" in message
    for name in PROVIDERS:
        assert name in message


def test_missing_key_names_the_variables_to_set() -> None:
    assert resolve_error(env={}) == (
        "no API key for quickrouter: set BATCHRUNNER_API_KEY (or QUICKROUTER_API_KEY)"
    )
    assert resolve_error("fal", env={}) == (
        "no API key for fal: set BATCHRUNNER_API_KEY (or FAL_KEY)"
    )


def test_another_providers_key_is_named_as_the_likely_mistake() -> None:
    """FAL_KEY set and the default provider (QuickRouter): the key is there, for the other
    provider. The value itself is never shown."""
    said = resolve_error(env={"FAL_KEY": "fal-secret-value"})
    assert said.endswith("; FAL_KEY is set, but it is fal's key (--provider fal)")
    assert "fal-secret-value" not in said
    said = resolve_error("fal", env={"QUICKROUTER_API_KEY": "qr-secret"})
    assert said.endswith("; QUICKROUTER_API_KEY is set, but it is quickrouter's key "
                         "(--provider quickrouter)")  # fmt: skip


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_keys_are_refused(blank: str) -> None:
    assert "is empty" in resolve_error(env={"BATCHRUNNER_API_KEY": blank})
    assert "is empty" in resolve_error(token=blank)


def test_a_key_with_inner_whitespace_is_refused_without_echoing_it() -> None:
    message = resolve_error(token=f"{TOKEN} {TOKEN}")
    assert "spaces or control characters" in message
    for pasted in (f"Key {TOKEN}", f"bearer  {TOKEN}"):  # the header's value, scheme and all
        message = resolve_error(env={"BATCHRUNNER_API_KEY": pasted})
        assert "starts with" in message and "give the key alone" in message
        assert TOKEN not in message


@pytest.mark.parametrize("pasted", ["\u201c{}\u201d", "{}\u2013x", "\u043a{}"])
def test_a_key_with_a_character_no_header_carries_is_refused(pasted: str) -> None:
    """Typographic quotes, an en dash, a Cyrillic letter: httpx could not send the header."""
    message = resolve_error(env={"FAL_KEY": pasted.format(TOKEN)}, provider="fal")
    assert message.startswith("the API key in FAL_KEY contains ")
    assert "no HTTP header can carry" in message


@pytest.mark.parametrize("quote", ['"', "'"])
def test_a_key_wrapped_in_quotes_is_refused_without_echoing_it(quote: str) -> None:
    """``export QUICKROUTER_API_KEY='"sk-..."'`` (or a .env loader that keeps the quotes) was a
    plain 401 with no word of why."""
    message = resolve_error(env={"FAL_KEY": f"{quote}{TOKEN}{quote}"}, provider="fal")
    assert message.startswith("the API key in FAL_KEY is wrapped in quotes")
    assert TOKEN not in message


def test_unknown_auth_scheme_is_refused() -> None:
    assert "unknown auth scheme 'basic'" in resolve_error(auth_scheme="basic", token=TOKEN)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://api.quickrouter.ai", "http:// is only allowed for loopback addresses"),
        ("http://127.0.0.1:99999", "the API base URL's port 99999 is not one (1 to 65535)"),
        ("http://127.0.0.1:0", "port 0 is not one"),
        ("http://10.0.0.5:8000", "use https://"),
        ("ftp://api.quickrouter.ai", "must be an http(s) URL"),
        ("api.quickrouter.ai", "must be an http(s) URL, got 'api.quickrouter.ai': write https://"),
        ("127.0.0.1:8080", "write http://127.0.0.1:8080"),  # loopback: plain http is fine
        ("localhost:8080/v1", "write http://localhost:8080/v1"),
        # an endpoint's URL pasted as the base: every request would have been a 404
        (
            "https://queue.fal.run/fal-ai/veo3/image-to-video/",
            "names a model (fal-ai/veo3/image-to-video): give the API's address alone, "
            "https://queue.fal.run, and the model with --model",
        ),
        ("https://api.quickrouter.ai/v1/fal-ai", "alone, https://api.quickrouter.ai/v1, and"),
        ("https://user:pw@api.quickrouter.ai", "user name or password"),
        ("https://api.quickrouter.ai/?key=1", "must not contain a query"),
        ("https://api.quickrouter.ai/#x", "must not contain a query"),
    ],
)
def test_unsafe_or_invalid_base_urls_are_refused(url: str, fragment: str) -> None:
    message = resolve_error(base_url=url, token=TOKEN)
    assert fragment in message


def test_http_message_is_exactly_the_documented_line() -> None:
    assert resolve_error(base_url="http://example.com", token=TOKEN) == (
        "http:// is only allowed for loopback addresses (127.0.0.1, ::1, localhost); use https://"
    )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://localhost:9/", "http://localhost:9"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://API.QuickRouter.AI:443/", "https://api.quickrouter.ai"),
        ("https://example.com:8443/prefix/", "https://example.com:8443"),
    ],
)
def test_loopback_http_and_origin_normalisation(url: str, origin: str) -> None:
    api = resolve_api(base_url=url, token=TOKEN)
    assert api.origin == origin
    assert not api.base_url.endswith("/")


def test_origin_of_drops_default_ports_and_lowercases() -> None:
    assert origin_of("HTTPS://Queue.Fal.Run:443/a/b?c=1") == "https://queue.fal.run"
    assert origin_of("http://host:80/") == "http://host"
    with pytest.raises(ValueError):
        origin_of("/relative/path")


def test_the_token_never_shows_in_repr_or_str() -> None:
    api = resolve_api(token=TOKEN)
    assert TOKEN not in repr(api)
    assert TOKEN not in str(api)
    assert TOKEN not in f"{api}"


def test_apiconfig_built_directly_is_validated_too() -> None:
    api = ApiConfig("https://Example.com/", "Bearer", TOKEN)  # type: ignore[arg-type]
    assert (api.base_url, api.auth_scheme) == ("https://example.com", "bearer")
    with pytest.raises(UsageError, match="loopback"):
        ApiConfig("http://example.com", "bearer", TOKEN)
    with pytest.raises(UsageError, match="empty"):
        ApiConfig("https://example.com", "bearer", " ")
