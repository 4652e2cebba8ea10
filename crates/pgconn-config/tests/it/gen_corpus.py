#!/usr/bin/env python3
"""Generate the combinatorial section of conninfo-corpus.txt.

Deterministic: a fixed seed, fixed component lists, no dependence on the
environment. Running it rewrites everything after the GENERATED_MARKER line of
the corpus (the hand-written sections above it are kept byte for byte), so it
can be re-run safely:

    python3 crates/pgconn-config/tests/it/gen_corpus.py          # rewrite corpus
    python3 crates/pgconn-config/tests/it/gen_corpus.py --stdout # print only

Generated lines never start with '#' or whitespace, never end with whitespace,
and never repeat a line already present in the corpus. Passwords are
placeholders, never real secrets.
"""

import os
import random
import sys

SEED = 20240515
URL_COUNT = 110
KV_COUNT = 30

GENERATED_MARKER = "# 4. generated combinations (gen_corpus.py output below; do not edit by hand)"

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conninfo-corpus.txt")

# --- URL components -------------------------------------------------------

SCHEMES = ["postgresql://"] * 6 + ["postgres://"]

USERS = [
    "u", "alice", "app_user",
    "a%40corp",            # encoded '@'
    "svc%3Aacct",          # encoded ':'
    "svc:acct",            # raw ':' -> user "svc", rest is the password
    "j%C3%BCrgen",         # encoded UTF-8
    "",                    # empty user: "@host" or ":pw@host"
]

PASSWORDS = [
    "pw", "notasecret",
    "p%40ss",              # encoded '@'
    "p@ss",                # raw '@' inside the password
    "p:ss",                # raw ':' inside the password
    "",                    # "user:@host"
    "x%2Fy",               # encoded '/'
]

HOSTS = [
    "db", "db.example.com", "192.0.2.10", "127.0.0.1",
    "[::1]", "[2001:db8::5]",
    "%2Ftmp", "%2Fvar%2Frun%2Fpostgresql",
    "",                    # empty host
]

PORTS = [None, None, "", "5433", "0", "70000", "abc"]

DBNAMES = [None, None, "", "app", "postgres", "my%20db", "d%2Fx", "caf%C3%A9", "d@x"]

PARAMS = [
    "sslmode=require", "sslmode=verify-full", "sslmode=disable",
    "application_name=gen@x", "application_name=gen%20app",
    "connect_timeout=5", "connect_timeout=0",
    "target_session_attrs=read-write", "target_session_attrs=standby",
    "options=-c%20search_path%3Dapp",
    "keepalives=0", "keepalives_idle=30",
    "bogus=1",             # unknown parameter
    "ssl=true", "requiressl=1",
    "host=%2Fsock", "host=", "port=5444", "dbname=override", "user=quser",
    "hostaddr=127.0.0.1",
    "a=b=c",               # extra '='
    "novalue",             # missing '='
    "",                    # empty parameter ("&&")
    "gssencmode=disable", "channel_binding=require", "load_balance_hosts=random",
    "client_encoding=UTF8", "sslrootcert=system", "fallback_application_name=gen",
    "sslcert=%2Fp%2Fc.crt", "passfile=%2Fp%2Fpgpass",
]

# --- keyword/value components --------------------------------------------

KV_PAIRS = {
    "host": ["db", "/tmp", "a,b", "''", "'db.example.com'", "", "[::1]", "a,,b"],
    "hostaddr": ["127.0.0.1", "::1", "127.0.0.1,127.0.0.2"],
    "port": ["5432", "5433,5434", "", "70000", "abc", "'5432'", "0"],
    "dbname": ["app", "'my db'", "d\\ x", "''", "postgresql://u@h/d", "'a\\'b'"],
    "user": ["u", "'o\\'brien'", "a@corp", "svc:acct"],
    "password": ["pw", "'not a secret'", "p\\\\s", "'p@ss'", "''", "x\\'y"],
    "sslmode": ["require", "verify-full", "prefer", "bogus"],
    "connect_timeout": ["5", "0", "-1"],
    "application_name": ["gen", "'gen app'", "gen@x"],
    "target_session_attrs": ["read-write", "prefer-standby", "any"],
    "options": ["'-c search_path=app'", "-c\\ work_mem=64MB"],
    "requiressl": ["1", "0"],
    "sslrootcert": ["system", "/p/root.crt"],
}
KV_SEPARATORS = [" ", " ", " ", "  ", " \t "]
KV_EQUALS = ["=", "=", "=", " = ", "= ", " ="]


def gen_url(rng):
    s = rng.choice(SCHEMES)
    # userinfo: none 35%, user only 35%, user:password 25%, ":password" 5%
    mode = rng.choices(["none", "user", "both", "pw"], weights=[35, 35, 25, 5])[0]
    if mode == "user":
        s += rng.choice(USERS) + "@"
    elif mode == "both":
        s += rng.choice(USERS) + ":" + rng.choice(PASSWORDS) + "@"
    elif mode == "pw":
        s += ":" + rng.choice(PASSWORDS) + "@"
    nhosts = rng.choice([1, 1, 1, 1, 2, 3])
    netlocs = []
    for _ in range(nhosts):
        h = rng.choice(HOSTS)
        p = rng.choice(PORTS)
        netlocs.append(h if p is None else h + ":" + p)
    s += ",".join(netlocs)
    db = rng.choice(DBNAMES)
    if db is not None:
        s += "/" + db
    nparams = rng.choice([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    if nparams:
        params = [rng.choice(PARAMS) for _ in range(nparams)]
        s += "?" + "&".join(params)
    return s


def gen_kv(rng):
    keys = rng.sample(sorted(KV_PAIRS), rng.randint(1, 5))
    parts = []
    for k in keys:
        parts.append(k + rng.choice(KV_EQUALS) + rng.choice(KV_PAIRS[k]))
    s = parts[0]
    for p in parts[1:]:
        s += rng.choice(KV_SEPARATORS) + p
    return s


def usable(line):
    return (
        line
        and not line.startswith("#")
        and line == line.strip()
        and "\n" not in line
    )


def generate(existing):
    rng = random.Random(SEED)
    seen = set(existing)
    out = []
    for gen, count in ((gen_url, URL_COUNT), (gen_kv, KV_COUNT)):
        made = 0
        while made < count:
            line = gen(rng)
            if not usable(line) or line in seen:
                continue
            seen.add(line)
            out.append(line)
            made += 1
    return out


def main():
    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if GENERATED_MARKER in lines:
        cut = lines.index(GENERATED_MARKER)
        # Drop the marker line and the rule line just above it.
        head = lines[: cut - 1]
    else:
        head = lines
    while head and head[-1] == "":
        head.pop()
    existing = [l for l in head if l and not l.startswith("#")]
    generated = generate(existing)
    section = [
        "",
        "# " + "-" * 75,
        GENERATED_MARKER,
        "# seed %d: %d URLs, then %d keyword/value strings" % (SEED, URL_COUNT, KV_COUNT),
        "# " + "-" * 75,
    ] + generated
    if "--stdout" in sys.argv[1:]:
        print("\n".join(generated))
        return
    with open(CORPUS, "w", encoding="utf-8") as f:
        f.write("\n".join(head + section) + "\n")


if __name__ == "__main__":
    main()
