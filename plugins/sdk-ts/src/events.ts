// The canonical loyalty event as plugins receive it (SPEC.md §2). The catalogue mirrors the
// Rust one in `crates/events`; a test in Canopy's suite checks that the two agree, and that
// the TypeScript template answers exactly as the Rust one. What JavaScript cannot mirror:
// numbers are doubles (an integer past 2^53 loses digits, `10.0` is written back as `10`),
// and an object lists integer-like keys (`"2"`) before the others.

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
    throw new Error('timestamp must be a string');
  }
  if (raw.id !== undefined && raw.id !== null && typeof raw.id !== 'string') {
    throw new Error('id must be a string');
  }
  // Objects without a prototype: a field named `__proto__` stays a field.
  const fields: { [name: string]: Json } = Object.create(null);
  for (const [key, field] of Object.entries(raw)) {
    if (!ENVELOPE.has(key)) fields[key] = field;
  }
  return {
    id: typeof raw.id === 'string' ? raw.id : undefined,
    event: raw.event,
    timestamp: raw.timestamp,
    customer: parseCustomer(raw.customer),
    fields,
  };
}

/** The customer's known fields, in the order the Rust SDK writes them, before any other. */
const CUSTOMER_FIELDS = ['email', 'first_name', 'last_name', 'display_name', 'shopify_customer_id'];

function parseCustomer(value: Json | undefined): Customer {
  const customer: Customer = Object.create(null);
  if (value === undefined) return customer;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('customer must be an object');
  }
  for (const key of CUSTOMER_FIELDS) {
    const field = value[key];
    if (field === undefined || field === null) continue;
    if (key === 'shopify_customer_id' && typeof field === 'number') {
      // Kept as text, as the Rust SDK does (exact below 2^53, like every JSON number here).
      customer[key] = String(field);
    } else if (typeof field === 'string') {
      customer[key] = field;
    } else {
      throw new Error(`customer.${key} must be a string`);
    }
  }
  for (const [key, field] of Object.entries(value)) {
    if (!CUSTOMER_FIELDS.includes(key)) customer[key] = field;
  }
  return customer;
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
  const out: { [key: string]: Json } = Object.create(null);
  if (event.id !== undefined) out.id = event.id;
  out.event = event.event;
  out.timestamp = event.timestamp;
  out.customer = event.customer as { [key: string]: Json };
  return Object.assign(out, event.fields);
}

/**
 * Request headers that frame or route a request, or belong to one hop of it: the HTTP layer
 * sets them, so neither a plugin nor an integration's settings may; the host refuses a
 * request naming one. Compare case-insensitively (`isReservedHeader`).
 */
export const RESERVED_HEADERS = [
  'Connection',
  'Content-Length',
  'Expect',
  'Host',
  'Keep-Alive',
  'Proxy-Authenticate',
  'Proxy-Authorization',
  'Proxy-Connection',
  'TE',
  'Trailer',
  'Transfer-Encoding',
  'Upgrade',
] as const;

/** Whether a header name is one of the `RESERVED_HEADERS`. */
export function isReservedHeader(name: string): boolean {
  const wanted = name.trim().toLowerCase();
  return RESERVED_HEADERS.some((reserved) => reserved.toLowerCase() === wanted);
}

/**
 * The first dot segment (`.`, `..`, or a percent-encoded form) in the path of a URL as
 * written, if any: URL parsing removes them, so such a request would go to another path than
 * the one written. The host refuses it; a plugin should refuse the event first.
 */
export function dotSegment(url: string): string | undefined {
  const scheme = url.indexOf('://');
  const rest = (scheme >= 0 ? url.slice(scheme + 3) : url).split(/[?#]/)[0] ?? '';
  const slash = rest.indexOf('/');
  const path = slash >= 0 ? rest.slice(slash) : '';
  return path
    .split('/')
    .slice(1)
    .find((segment) => {
      const decoded = segment.toLowerCase().replaceAll('%2e', '.');
      return decoded === '.' || decoded === '..';
    });
}
