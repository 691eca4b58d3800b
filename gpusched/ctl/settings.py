"""config check: validate the daemon's config with the daemon's own loader (config.py) and print the
effective settings, every one with its value, defaults included. Read-only; no daemon needed."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from gpusched.ctl.common import CtlError, print_json, safe

if TYPE_CHECKING:                                      # annotations only: the import costs every command
    from gpusched import config as configmod



def effective(cfg: configmod.Config) -> dict[str, Any]:
    """Every setting as plain data (durations in seconds, sizes in bytes, as config.py holds them)."""
    import dataclasses
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        out[f.name] = _plain(getattr(cfg, f.name))
    return out


def _plain(v: Any) -> Any:
    import dataclasses
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (frozenset, set)):
        return sorted(_plain(x) for x in v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


def lines(cfg: configmod.Config) -> list[str]:
    """`key = value` for each setting, "# default" beside those the file leaves at their default."""
    from gpusched import config as configmod
    mine, default = effective(cfg), effective(configmod.Config())
    width = max(map(len, mine))
    return [f"{k:<{width}} = {json.dumps(v)}" + ("    # default" if v == default[k] else "") for k, v in mine.items()]


def cmd_config_check(args: argparse.Namespace) -> int:
    from gpusched import config as configmod
    path = args.file or args.config
    if args.file and not os.path.exists(path):
        raise CtlError(f"{path}: no such file; give the config's path (the daemon reads {configmod.DEFAULT_PATH})")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = configmod.parse(f.read(), path)
        note = f"{path}: valid"
    except FileNotFoundError:
        cfg, note = configmod.Config(), f"{path}: no such file; every setting is at its default"
    except UnicodeDecodeError:
        raise CtlError(f"{path}: not UTF-8 text; a config is a TOML file (docs/config.md)") from None
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror}; run it as a user who can read the file (root)") from None
    except configmod.ConfigError as e:
        raise CtlError(f"invalid config: {e} (docs/config.md lists every key)") from None
    if args.json:
        print_json("config", effective(cfg), path=path, valid=True)
        return 0
    print(safe(note))
    for line in lines(cfg):
        print(safe(line))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="the daemon's config: `config check [FILE]` validates it and prints "
                                      "every setting")
    verbs = p.add_subparsers(dest="config_verb", required=True)
    c = verbs.add_parser("check", help="validate the config (default: --config's, /etc/gpusched/gpusched.toml) "
                                       "with the daemon's own loader and print the effective settings; "
                                       "exit 1 if invalid",
                         description="Validate the config with the daemon's own loader (no daemon needed) and "
                                     "print every setting with its value, defaults included (durations in "
                                     "seconds, sizes in bytes). An error names the file, line and key; "
                                     "exit 1 then.")
    c.add_argument("file", nargs="?", help="the config file to check (default: --config)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_config_check)
