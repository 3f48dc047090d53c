"""Every key of base_config() is known to a config's identity: in the keys existing workdirs were made with
(tests/config_keys.txt, never added to), or in INTRODUCED or NEUTRAL. A key added without either would make
every existing workdir refuse its next relaunch (and retrain its source models)."""
import pathlib

import ml_collections

from tl_research import config as C

KNOWN = pathlib.Path(__file__).with_name("config_keys.txt")
OPEN = {"evals"}  # blocks whose entries config files name (not keys of base_config())


def leaf_keys(node, prefix: str = "") -> set[str]:
    """The dotted keys of a config's values (an open block counts as one key)."""
    out = set()
    for key, value in node.items():
        path = prefix + key
        if isinstance(value, ml_collections.ConfigDict) and path not in OPEN:
            out |= leaf_keys(value, path + ".")
        else:
            out.add(path)
    return out


def known_keys() -> set[str]:
    lines = (line.strip() for line in KNOWN.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def test_every_base_config_key_is_known_introduced_or_neutral():
    keys = leaf_keys(C.base_config())
    new = sorted(keys - known_keys() - set(C.INTRODUCED) - C.NEUTRAL)
    assert not new, (f"base_config() keys without an entry in config.INTRODUCED (the value that trains what the "
                     f"code trained before the key existed) or config.NEUTRAL: {new}")


def test_no_known_key_is_gone_and_every_entry_names_a_key():
    keys = leaf_keys(C.base_config())
    gone = sorted(known_keys() - keys)
    assert not gone, f"keys existing workdirs hold, no longer in base_config(): {gone}"
    stale = sorted((set(C.INTRODUCED) | C.NEUTRAL) - keys)
    assert not stale, f"INTRODUCED or NEUTRAL entries that name no key of base_config(): {stale}"


def test_an_introduced_key_at_its_old_value_leaves_the_identity_unchanged():
    c = C.base_config()
    for key, old in C.INTRODUCED.items():
        C.set_value(c, key, old)
    tree = C.identity(c.to_dict())
    for key in [*C.INTRODUCED, *C.NEUTRAL]:
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.get(p, {})  # a block of introduced keys only is gone whole
        assert leaf not in node, key


def test_a_key_read_only_under_a_regulariser_is_left_out_of_other_configs_identity():
    from tl_research.config import run_identity
    assert run_identity.READ_ONLY_UNDER
    for key, (sibling, value) in run_identity.READ_ONLY_UNDER.items():
        block, _, name = key.rpartition(".")
        plain = C.base_config()
        other = C.base_config()
        other[block][name] = "x" if isinstance(plain[block][name], str) else plain[block][name] + 1
        assert C.config_hash(plain) == C.config_hash(other), key  # not read: the same experiment
        plain[block][sibling] = other[block][sibling] = value
        assert C.config_hash(plain) != C.config_hash(other), key  # read: another experiment
