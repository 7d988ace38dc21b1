// The canonical loyalty event as plugins receive it (SPEC.md §2). The catalogue mirrors the
// Rust one in `crates/events`; a test in Canopy's suite checks that the two agree.

/** The 19 canonical event types, in the order of the product documentation. */
export const EVENT_TYPES = [
  'seeds.earned.order',
  'seeds.earned.visit',
  'seeds.earned.review',
  'seeds.earned.referral',
  'seeds.earned.social_share',
  'seeds.earned.bonus',
  'tier.changed',
  'review.submitted',
  'review.approved',
  'review.rejected',
  'gift_card.earned',
  'gift_card.claimed',
  'store_credit.earned',
  'store_credit.claimed',
  'eco_product.awarded',
  'eco.tree_planted',
  'referral.generated',
  'referral.visit',
  'referral.successful',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

const DISPLAY_NAMES: Record<EventType, string> = {
  'seeds.earned.order': 'Seeds Earned Order',
  'seeds.earned.visit': 'Seeds Earned Visit',
  'seeds.earned.review': 'Seeds Earned Review',
  'seeds.earned.referral': 'Seeds Earned Referral',
  'seeds.earned.social_share': 'Seeds Earned Social Share',
  'seeds.earned.bonus': 'Seeds Earned Bonus',
  'tier.changed': 'Tier Changed',
  'review.submitted': 'Review Submitted',
  'review.approved': 'Review Approved',
  'review.rejected': 'Review Rejected',
  'gift_card.earned': 'Gift Card Earned',
  'gift_card.claimed': 'Gift Card Claimed',
  'store_credit.earned': 'Store Credit Earned',
  'store_credit.claimed': 'Store Credit Claimed',
  'eco_product.awarded': 'Eco Product Awarded',
  'eco.tree_planted': 'Eco Tree Planted',
  'referral.generated': 'Referral Generated',
  'referral.visit': 'Referral Visit',
  'referral.successful': 'Referral Successful',
};

/** The human name platforms show, e.g. `Seeds Earned Order`. */
export function displayName(type: EventType): string {
  return DISPLAY_NAMES[type];
}

/** Whether `key` is one of the canonical event types. */
export function isEventType(key: string): key is EventType {
  return Object.prototype.hasOwnProperty.call(DISPLAY_NAMES, key);
}

/** A JSON value, as events and settings carry them. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The customer an event is about. `email` is absent for anonymous customers. */
export interface Customer {
  email?: string;
  first_name?: string;
  last_name?: string;
  display_name?: string;
  /** Kept as text: Shopify ids exceed what JSON numbers carry safely. */
  shopify_customer_id?: string;
  [extra: string]: Json | undefined;
}

/** A canonical event: the envelope, and the event's own fields (amount, tier, …). */
export interface Event {
  /** UUID; assigned by the host when the sender leaves it out. */
  id?: string;
  event: EventType;
  /** RFC 3339 in UTC, as sent. */
  timestamp: string;
  customer: Customer;
  /** The event's own fields, in the order they were sent. */
  fields: { [name: string]: Json };
}

const ENVELOPE = new Set(['id', 'event', 'timestamp', 'customer']);

/**
 * Parses the event text the host passes to `transform`. Throws a message naming what is
 * wrong; the SDK turns it into an `invalid-event` refusal.
 */
export function parseEvent(text: string): Event {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`the event is not JSON: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('the event is not a JSON object');
  }
  const raw = value as { [key: string]: Json };
  if (typeof raw.event !== 'string' || !isEventType(raw.event)) {
    throw new Error(`unknown event type ${JSON.stringify(raw.event ?? null)}`);
  }
  if (typeof raw.timestamp !== 'string') {
    throw new Error('the event has no timestamp');
  }
  const customer: Customer = {};
  if (typeof raw.customer === 'object' && raw.customer !== null && !Array.isArray(raw.customer)) {
    for (const [key, field] of Object.entries(raw.customer)) {
      if (field === null) continue;
      // Shopify ids may arrive as numbers; they are kept as text.
      customer[key] = key === 'shopify_customer_id' && typeof field === 'number' ? String(field) : field;
    }
  }
  const fields: { [name: string]: Json } = {};
  for (const [key, field] of Object.entries(raw)) {
    if (!ENVELOPE.has(key)) fields[key] = field;
  }
  return {
    id: typeof raw.id === 'string' ? raw.id : undefined,
    event: raw.event,
    timestamp: raw.timestamp,
    customer,
    fields,
  };
}

/** The customer's email, when there is a non-blank one. */
export function email(event: Event): string | undefined {
  const value = event.customer.email;
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
}

/**
 * The event as the loyalty backend sent it: envelope first, then the event's own fields
 * (what a destination that forwards the whole event puts in its body).
 */
export function eventJson(event: Event): { [key: string]: Json } {
  const out: { [key: string]: Json } = {};
  if (event.id !== undefined) out.id = event.id;
  out.event = event.event;
  out.timestamp = event.timestamp;
  out.customer = event.customer as { [key: string]: Json };
  return Object.assign(out, event.fields);
}
