"""Ordering's use cases: one function per command and query, on a unit of work.

Each takes the unit of work (``uow.repo`` on the open transaction, ``uow.events``, ``uow.time``),
the actor where one acts, and a typed command; the rules themselves are in ``domain.py``. The
HTTP door (``api.py``) and the Kafka handlers (``handlers.py``) only build the unit of work and
call these; unit tests call them with in-memory fakes (tests/unit/test_ordering_service.py).

- ``access``: who may act on an account (R8); the door runs it before the Idempotency-Key.
- ``accounts``: accounts, users and roles (R1-R6).
- ``buying``: orders, quotes and trials (R14-R17).
- ``quotes``: a partner's quote, for a new subscription or the renewal of one (R16, R27).
- ``subscriptions``: conversion, auto-renew, term and product changes, seats, renewals, refunds.
- ``sign_in``: one-time sign-in links for the portal (issue 16).
- ``lifecycle``: ordering's view of each subscription, from lifecycle's events.
"""

from __future__ import annotations

from .access import ADMINS as ADMINS
from .access import BUYER as BUYER
from .access import UnitOfWork as UnitOfWork
from .access import authorize as authorize
from .access import buyers_subscription as buyers_subscription
from .access import may_convert_trial as may_convert_trial
from .access import may_issue_quote as may_issue_quote
from .access import may_place_order as may_place_order
from .access import quote_for_buyer as quote_for_buyer
from .accounts import add_payer as add_payer
from .accounts import add_user as add_user
from .accounts import appoint_secondary_admin as appoint_secondary_admin
from .accounts import change_billing_details as change_billing_details
from .accounts import change_buyer as change_buyer
from .accounts import get_account as get_account
from .accounts import open_account as open_account
from .accounts import remove_payer as remove_payer
from .accounts import remove_secondary_admin as remove_secondary_admin
from .accounts import transfer_primary_admin as transfer_primary_admin
from .buying import get_order as get_order
from .buying import get_quote as get_quote
from .buying import list_orders as list_orders
from .buying import place_order as place_order
from .buying import preview_order as preview_order
from .buying import record_applied_rate as record_applied_rate
from .lifecycle import record_activation as record_activation
from .lifecycle import record_reactivation as record_reactivation
from .lifecycle import record_renewal as record_renewal
from .lifecycle import record_stage_change as record_stage_change
from .quotes import accept_quote as accept_quote
from .quotes import issue_quote as issue_quote
from .sign_in import redeem_sign_in_link as redeem_sign_in_link
from .sign_in import request_sign_in_links as request_sign_in_links
from .subscriptions import add_seats as add_seats
from .subscriptions import change_renewal_payment_method as change_renewal_payment_method
from .subscriptions import change_term as change_term
from .subscriptions import convert_trial as convert_trial
from .subscriptions import get_subscription as get_subscription
from .subscriptions import list_subscriptions as list_subscriptions
from .subscriptions import record_removed_payment_method as record_removed_payment_method
from .subscriptions import record_saved_payment_method as record_saved_payment_method
from .subscriptions import request_refund as request_refund
from .subscriptions import request_renewal as request_renewal
from .subscriptions import set_auto_renew as set_auto_renew
from .subscriptions import switch_product as switch_product
