from django.apps import AppConfig


class CertmgrConfig(AppConfig):
    name = "certmgr"
    verbose_name = "Organizations & audit"

    def ready(self) -> None:
        # Imported for their side effects: the system checks; the login audit's and the login lockout's
        # signal receivers.
        from certmgr import checks, logins, two_factor  # noqa: F401
        from certmgr.choices import Choices

        _write_choices_as_values(Choices)


def _write_choices_as_values(base: type) -> None:
    """Migrations store a choice member (a field default) as its plain value, as Django does for its own
    ``TextChoices``, so they never import our enumerations."""
    from django.db.migrations.serializer import BaseSerializer, Serializer, serializer_factory

    class ChoicesSerializer(BaseSerializer):
        def serialize(self):
            return serializer_factory(self.value.value).serialize()

    Serializer.register(base, ChoicesSerializer)
