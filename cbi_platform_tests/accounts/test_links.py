import pytest

from cbi_platform.accounts.links import PublicUrlError, public_base_url, public_url


def test_default_is_the_local_server():
    assert public_url("/", env={}) == "http://127.0.0.1:8000/"


def test_configured_base_with_a_prefix_and_an_encoded_query():
    env = {"CBI_PUBLIC_BASE_URL": "https://zl.example.com/cbi/"}
    assert public_base_url(env) == "https://zl.example.com/cbi"
    url = public_url("me/unsubscribe", {"token": "a b&c=d"}, env=env)
    assert url == "https://zl.example.com/cbi/me/unsubscribe?token=a+b%26c%3Dd"


@pytest.mark.parametrize(
    "base", ["zl.example.com", "ftp://x.com", "https://x.com/?a=1", "https://"]
)
def test_a_bad_base_url_is_named(base):
    with pytest.raises(PublicUrlError, match="CBI_PUBLIC_BASE_URL"):
        public_url("/", env={"CBI_PUBLIC_BASE_URL": base})


def test_a_path_cannot_point_elsewhere():
    with pytest.raises(PublicUrlError):
        public_url("https://evil.example.com/x", env={})
    with pytest.raises(PublicUrlError):
        public_url("//evil.example.com/x", env={})
