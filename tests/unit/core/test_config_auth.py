"""The TOML config file, users and permissions."""

import pytest

from mqemu.broker.auth import AuthRegistry, Permission, User
from mqemu.broker.config import ConfigError, load_config
from mqemu.broker.errors import AccessRefused, AuthenticationFailed


def write(tmp_path, text):
    path = tmp_path / "mqemu.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_guest_on_slash():
    cfg = load_config(None)
    assert cfg.engine == "rabbitmq" and cfg.vhosts == ["/"]
    assert cfg.auth.authenticate("guest", "guest", "127.0.0.1").name == "guest"


def test_users_vhosts_permissions_from_file(tmp_path):
    cfg = load_config(write(tmp_path, """
engine = "rabbitmq"
memory_high_watermark = 1000000
[[users]]
name = "app"
password = "s3cret"
[[vhosts]]
name = "staging"
[[permissions]]
user = "app"
vhost = "staging"
configure = "^app\\\\."
write = ".*"
read = ".*"
[mqtt]
deny_subscribe = ["secret/#"]
"""))
    assert cfg.engine == "rabbitmq" and cfg.vhosts == ["/", "staging"]
    assert cfg.memory_high_watermark == 1000000
    assert cfg.extra["mqtt"] == {"deny_subscribe": ["secret/#"]}
    user = cfg.auth.authenticate("app", "s3cret", "10.0.0.5")  # not loopback-only
    cfg.auth.check(user, "staging", "configure", "queue", "app.orders")
    with pytest.raises(AccessRefused, match="access to queue 'other' in vhost 'staging' refused for user 'app'"):
        cfg.auth.check(user, "staging", "configure", "queue", "other")
    with pytest.raises(AccessRefused):
        cfg.auth.check_vhost(user, "/")
    with pytest.raises(AuthenticationFailed):
        cfg.auth.authenticate("guest", "guest", "127.0.0.1")  # users replaced the defaults


def test_command_line_engine_wins_over_file(tmp_path):
    assert load_config(write(tmp_path, 'engine = "activemq"\n'), "rabbitmq").engine == "rabbitmq"


@pytest.mark.parametrize("text, words", [
    ("engine = 'qpid'", "engine must be one of"),
    ("[[users]]\nname = 'x'\n", "needs name and password"),
    ("[[permissions]]\nuser = 'ghost'\n", "unknown user 'ghost'"),
    ("memory_high_watermark = -1", "memory_high_watermark"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "absent.toml"))


@pytest.mark.parametrize("peer, ok", [
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("10.1.2.3", False), (None, True),
])
def test_guest_is_loopback_only(peer, ok):
    auth = AuthRegistry.default()
    if ok:
        assert auth.authenticate("guest", "guest", peer).name == "guest"
    else:
        with pytest.raises(AuthenticationFailed, match="can only connect via localhost"):
            auth.authenticate("guest", "guest", peer)


def test_empty_permission_pattern_refuses_everything():
    auth = AuthRegistry()
    auth.users["ro"] = User("ro", "pw")
    auth.permissions[("ro", "/")] = Permission(configure="", write="", read=".*")
    user = auth.authenticate("ro", "pw", None)
    auth.check(user, "/", "read", "queue", "anything")
    with pytest.raises(AccessRefused):
        auth.check(user, "/", "write", "exchange", "amq.default")


def test_a_user_given_by_a_password_hash(tmp_path):
    from mqemu.broker.auth import hash_password

    cfg = load_config(write(tmp_path, f"""
[[users]]
name = "app"
password_hash = "{hash_password('s3cret-word')}"
tags = ["administrator"]
"""))
    assert cfg.auth.authenticate("app", "s3cret-word", "10.0.0.1").name == "app"
    with pytest.raises(AuthenticationFailed):
        cfg.auth.authenticate("app", "wrong", "10.0.0.1")
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, """
[[users]]
name = "app"
password_hash = "AAAA"
hashing_algorithm = "rot13"
"""))
