"""Drop `"key": null` members from vLLM's JSON where OpenAI's spec does not allow a null.

vLLM writes null for every optional field it does not fill (`message.annotations`,
`message.function_call`, `usage.prompt_tokens_details`, `system_fingerprint`, ...), where
OpenAI's schema types an object, array or string and simply leaves the key out. The keys whose
null the spec requires or allows and clients read are kept: `content`, `refusal`, `logprobs`,
`bytes`, `finish_reason` (null in every chunk but the last), and an error's `param`/`code`.

This runs on every relayed chunk, so it works on the bytes: a substring test, then three
regular-expression passes (in C), no JSON parsing. It is exact on JSON as vLLM writes it: a raw
`"` only ever delimits a string (inside one it is escaped as `\\"`), so `{"k":null` or
`,"k":null` can only be a member, never text.
"""

from __future__ import annotations

import re

KEEP = ("content", "refusal", "logprobs", "bytes", "finish_reason", "param", "code")

_NAME = (rb'(?!(?:' + b"|".join(k.encode() for k in KEEP) + rb')")'
         rb'[A-Za-z_][A-Za-z0-9_]*":null')
# A quote followed by a letter opens a key (a closing quote is followed by `:,}]`), unless
# escaped; a key is preceded by `{` or `,`. So: `"k":null,` is a whole member but the last,
# `,"k":null}` the last one, `{"k":null}` the only one.
_LEADING = re.compile(rb'"(?<!\\")' + _NAME + rb",")
_TRAILING = re.compile(rb',"' + _NAME + rb"(?=})")
_ALONE = re.compile(rb'(?<={)"' + _NAME + rb"(?=})")


def drop_nulls(data: bytes) -> bytes:
    """`data` without the null members the spec does not allow (compact JSON as vLLM writes
    it; JSON with spaces around `:` passes through unchanged)."""
    if b":null" not in data:
        return data
    if b":null," in data:
        data = _LEADING.sub(b"", data)
    if b":null}" in data:
        data = _TRAILING.sub(b"", data)
        if b'{"' in data:
            data = _ALONE.sub(b"", data)
    return data
