"""Enumerations with labels for humans, free of Django so pure modules can share them with the models.

``Choices`` is a ``StrEnum`` whose members carry a label (``KIND = "internal-root", "Internal root"``)
and whose class offers ``choices``, ``values`` and ``labels`` like Django's ``TextChoices``, so a model field
takes ``choices=KeyAlgorithm.choices`` and code compares members with plain strings.
"""

from __future__ import annotations

from enum import EnumType, StrEnum
from typing import Self


class _ChoicesType(EnumType):
    def _members(cls) -> list[Choices]:
        return list(cls)

    @property
    def choices(cls) -> list[tuple[str, str]]:
        return [(member.value, member.label) for member in cls._members()]

    @property
    def values(cls) -> list[str]:
        return [member.value for member in cls._members()]

    @property
    def labels(cls) -> list[str]:
        return [member.label for member in cls._members()]


class Choices(StrEnum, metaclass=_ChoicesType):
    """A string enumeration whose members are ``value`` or ``(value, label)``."""

    _label: str

    def __new__(cls, value: str, label: str | None = None) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member._label = label if label is not None else value.replace("_", " ").replace("-", " ").capitalize()
        return member

    @property
    def label(self) -> str:
        return self._label

    @property
    def do_not_call_in_templates(self) -> bool:
        """Django templates call callables; an enum member is shown, not called."""
        return True

    @classmethod
    def label_of(cls, value: str) -> str:
        """The label of ``value``, or ``value`` itself when it is not a member (old rows, free text)."""
        try:
            return cls(value).label
        except ValueError:
            return value
