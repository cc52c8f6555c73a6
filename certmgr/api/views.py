"""API doors of the core: organizations, memberships, tokens, audit events. Thin: parse, call a service."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from certmgr import invitations, services
from certmgr.api import serializers as s
from certmgr.api.mixins import TenantViewMixin, resolve_organization
from certmgr.api.validation import valid
from certmgr.errors import PermissionDenied
from certmgr.filters import ApiTokenFilter, AuditEventFilter, MembershipFilter
from certmgr.models import ApiToken, AuditEvent, Invitation, Membership, Organization
from certmgr.permissions import Action

User = get_user_model()


class OrganizationViewSet(TenantViewMixin, viewsets.ReadOnlyModelViewSet):
    """The organizations the caller belongs to."""

    base_queryset = Organization.objects.all()
    serializer_class = s.OrganizationSerializer
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "created_at", "id"]
    ordering = ["name"]


class MembershipViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Members of the caller's organizations; administrators add, re-role and remove them."""

    base_queryset = Membership.objects.select_related("user", "organization")
    serializer_class = s.MembershipSerializer
    write_action = Action.MANAGE_MEMBERS
    filterset_class = MembershipFilter
    search_fields = ["user__username"]
    ordering_fields = ["id", "created_at", "role"]

    @extend_schema(request=s.MembershipCreateSerializer, responses={201: s.MembershipSerializer})
    def create(self, request):
        """Superusers only: attach an account by user name. Administrators invite (``/invitations/``)."""
        if not self.actor.is_superuser:
            raise PermissionDenied(
                "members join by invitation: POST /api/v1/invitations/ with their e-mail address and role"
            )
        data = valid(s.MembershipCreateSerializer, request)
        org = resolve_organization(request, data.get("organization"), Action.MANAGE_MEMBERS)
        user, _ = services.get_or_create_user(data["username"], email=data.get("email", ""))
        membership = services.add_member(org, user, data["role"], actor=self.actor)
        return Response(s.MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.MembershipUpdateSerializer, responses={200: s.MembershipSerializer})
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        data = valid(s.MembershipUpdateSerializer, request)
        membership = services.change_role(membership, data["role"], actor=self.actor)
        return Response(s.MembershipSerializer(membership).data)

    def perform_destroy(self, instance):
        services.remove_member(instance, actor=self.actor)


class InvitationViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Invitations to join an organization, for its administrators. The create call returns the one-time
    link once (it is also e-mailed); DELETE withdraws a pending invitation (the row stays)."""

    base_queryset = Invitation.objects.select_related("organization", "invited_by", "accepted_by")
    serializer_class = s.InvitationSerializer
    read_action = Action.MANAGE_MEMBERS
    write_action = Action.MANAGE_MEMBERS
    search_fields = ["email"]
    ordering_fields = ["id", "created_at", "expires_at"]

    @extend_schema(request=s.InvitationCreateSerializer, responses={201: s.InvitationCreatedSerializer})
    def create(self, request):
        data = valid(s.InvitationCreateSerializer, request)
        org = resolve_organization(request, data.get("organization"), Action.MANAGE_MEMBERS)
        sent = invitations.invite(org, data["email"], data["role"], actor=self.actor)
        body = s.InvitationSerializer(sent.invitation).data
        body.update(link=sent.link, emailed=sent.emailed, email_error=sent.email_error)
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        invitations.revoke(self.get_object(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenViewSet(
    TenantViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """API tokens: your own, or all of your organizations' when you are an administrator.

    The secret is returned once, by the create call. DELETE revokes (the row stays for the audit trail).
    """

    base_queryset = ApiToken.objects.select_related("user")
    serializer_class = s.ApiTokenSerializer
    write_action = Action.CREATE_TOKEN
    filterset_class = ApiTokenFilter
    search_fields = ["name", "prefix"]
    ordering_fields = ["id", "created_at", "expires_at", "last_used_at"]

    @extend_schema(request=s.ApiTokenCreateSerializer, responses={201: s.ApiTokenCreatedSerializer})
    def create(self, request):
        data = valid(s.ApiTokenCreateSerializer, request)
        org = resolve_organization(request, data.get("organization"), Action.CREATE_TOKEN)
        owner = request.user
        if data.get("username") and data["username"] != request.user.get_username():
            owner = User.objects.filter(username=data["username"]).first()
            if owner is None:
                raise ValidationError({"username": ["Unknown user."]})
        new = services.create_api_token(
            org,
            owner,
            name=data["name"],
            role=data["role"],
            expires_at=data.get("expires_at"),
            actor=self.actor,
        )
        body = s.ApiTokenSerializer(new.token).data | {"token": new.secret}
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        services.revoke_api_token(instance, actor=self.actor)

    @extend_schema(request=None, responses={200: s.ApiTokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = services.revoke_api_token(self.get_object(), actor=self.actor)
        return Response(s.ApiTokenSerializer(token).data)

    def check_object_permissions(self, request, obj):
        # Owners may revoke their own tokens; the service decides about everyone else's.
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return super().check_object_permissions(request, obj)


class AuditEventViewSet(TenantViewMixin, viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first. Filter by actor, action (prefix with a trailing '.'), target, outcome,
    and time (``since``/``until``, ISO 8601)."""

    base_queryset = AuditEvent.objects.all()
    serializer_class = s.AuditEventSerializer
    read_action = Action.VIEW_AUDIT
    filterset_class = AuditEventFilter
    search_fields = ["action", "actor_label", "target_repr", "error"]
    ordering_fields = ["time", "id"]
    ordering = ["-time", "-id"]
