"""funcrl._compat: the work-arounds for older torch releases."""

from __future__ import annotations

import dataclasses
import types

from funcrl import _compat


@dataclasses.dataclass(frozen=True)
class _Net:
    width: int


def test_random_check_wrapper_turns_attribute_errors_into_false_and_wraps_once():
    class Raises:
        def is_supported_random(self):
            return hash(object.__new__(_Net)) is None  # no fields: AttributeError

    class Answers:
        def is_supported_random(self):
            return True

    module = types.SimpleNamespace(Raises=Raises, Answers=Answers, other=3)
    assert _compat._catch_attribute_errors(module) is True
    assert Raises().is_supported_random() is False
    assert Answers().is_supported_random() is True
    assert _compat._catch_attribute_errors(module) is False  # already wrapped


def test_dynamo_random_check_on_an_object_still_being_built():
    from torch._dynamo.variables.user_defined import UserDefinedObjectVariable

    _compat.patch_dynamo_random_check(force=True)
    empty = object.__new__(_Net)  # what dynamo holds while tracing _Net(...): no fields yet
    assert UserDefinedObjectVariable(empty).is_supported_random() is False
    assert UserDefinedObjectVariable(_Net(3)).is_supported_random() is False
