"""Set up the test provider from the outside: ``python -m tests.oidc_provider.cli client|user ...``
(with DJANGO_SETTINGS_MODULE=tests.oidc_provider.settings)."""

import argparse
import sys

import django


def main(argv: list[str]) -> None:
    django.setup()
    from django.contrib.auth.models import Group, User
    from oidc_provider.models import Client, ResponseType

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("client", help="register a confidential relying party (code flow)")
    client.add_argument("client_id")
    client.add_argument("client_secret")
    client.add_argument("redirect_uri")
    user = commands.add_parser("user", help="create or update a user and set their groups exactly")
    user.add_argument("username")
    user.add_argument("password")
    user.add_argument("--email", default="")
    user.add_argument("--groups", nargs="*", default=[])
    args = parser.parse_args(argv)

    if args.command == "client":
        rp, _ = Client.objects.update_or_create(
            client_id=args.client_id,
            defaults={
                "name": "certmgr",
                "client_type": "confidential",
                "client_secret": args.client_secret,
                "jwt_alg": "RS256",
                "require_consent": False,
                "reuse_consent": True,
                "_redirect_uris": args.redirect_uri,
            },
        )
        rp.response_types.set([ResponseType.objects.get(value="code")])
    else:
        account, _ = User.objects.get_or_create(username=args.username)
        account.email = args.email
        account.first_name = args.username.capitalize()
        if not account.check_password(args.password):
            # Only when it changes: a new password hash ends the user's sessions at the provider.
            account.set_password(args.password)
        account.save()
        account.groups.set([Group.objects.get_or_create(name=name)[0] for name in args.groups])


if __name__ == "__main__":
    main(sys.argv[1:])
