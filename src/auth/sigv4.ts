/**
 * Server-side AWS Signature Version 4 verification (header auth, `AWS4-HMAC-SHA256`).
 *
 * The canonical request is assembled by the AWS SDK's own signer code (`@smithy/signature-v4`), so
 * header trimming, sorting, query escaping and path normalisation match what clients signed. The
 * hashing around it is synchronous node:crypto, and signing keys are cached, because this runs on
 * every request.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import {
  ALGORITHM_IDENTIFIER,
  KEY_TYPE_IDENTIFIER,
  SignatureV4Base,
  createScope,
  getCanonicalHeaders,
  getCanonicalQuery,
} from '@smithy/signature-v4';
import { KmsError } from '../kms/errors.js';
import { sha256Hex } from '../sha256.js';
import { ON_BEHALF_OF_HEADER } from './principals.js';

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface SignedRequest {
  method: string;
  /** Raw request target including the query, e.g. '/' or '/?a=b'. */
  url: string;
  /** Node's lower-cased headers. */
  headers: IncomingHttpHeaders;
  /** Node's `req.rawHeaders`. Optional, but needed to canonicalise a header sent more than once
   *  exactly (AWS joins the values with ',', node with ', ' or keeps only the first). */
  rawHeaders?: string[];
  body: Buffer;
}

export interface SigV4Options {
  /** The Region a wrongly scoped request is told to use. */
  region: string;
  /** Every Region a request may be scoped to; just `region` when absent. */
  regions?: readonly string[];
  /** Signing name, 'kms'. */
  service: string;
  maxSkewSeconds: number;
  now?: () => Date;
}

type SmithyRequest = Parameters<typeof getCanonicalQuery>[0];
type QueryBag = NonNullable<SmithyRequest['query']>;

const MAX_CACHED_SIGNING_KEYS = 1024;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const HEX_SIGNATURE = /^[0-9a-f]{64}$/;
const MISMATCH =
  'The request signature we calculated does not match the signature you provided. Check your AWS Secret ' +
  'Access Key and signing method. Consult the service documentation for details.';

const incomplete = (message: string) => new KmsError('IncompleteSignatureException', message);
const invalid = (message: string) => new KmsError('InvalidSignatureException', message);
const unrecognized = () => new KmsError('UnrecognizedClientException', 'The security token included in the request is invalid.');

/** Exposes the SDK signer's canonical-request assembly (its path normalisation is private). */
class CanonicalRequestBuilder extends SignatureV4Base {
  constructor() {
    // Only createCanonicalRequest is used: credentials, region and the hash are never read.
    super({
      service: '',
      region: '',
      credentials: { accessKeyId: '', secretAccessKey: '' },
      sha256: class {
        update(): void {}
        digest(): Promise<Uint8Array> {
          throw new Error('unused');
        }
      },
    });
  }

  build(method: string, path: string, query: QueryBag, headers: Record<string, string>, payloadHash: string): string {
    const request = { method, path, query, headers, protocol: 'http:', hostname: '' } as SmithyRequest;
    return this.createCanonicalRequest(request, headers, payloadHash);
  }
}

interface AuthorizationHeader {
  accessKeyId: string;
  scope: string[]; // date, region, service, terminator
  signedHeaders: string[];
  signature: string;
}

export class SigV4Verifier {
  private readonly canonical = new CanonicalRequestBuilder();
  /** `${accessKeyId}/${date}/${region}` → key; the service is fixed per verifier. */
  private readonly signingKeys = new Map<string, { secret: string; key: Buffer }>();
  private readonly now: () => Date;
  private readonly regions: ReadonlySet<string>;

  constructor(
    private readonly opts: SigV4Options,
    private readonly lookupSecret: (accessKeyId: string) => string | undefined,
  ) {
    this.now = opts.now ?? (() => new Date());
    this.regions = new Set(opts.regions ?? [opts.region]);
  }

  /** Returns the access key id that signed the request; throws KmsError otherwise. */
  verify(req: SignedRequest): string {
    return this.verifyScoped(req).accessKeyId;
  }

  /** The access key id that signed the request and the Region its credential is scoped to. */
  verifyScoped(req: SignedRequest): { accessKeyId: string; region: string } {
    const authorization = req.headers.authorization;
    if (!authorization) {
      throw new KmsError('MissingAuthenticationTokenException', 'Request is missing Authentication Token');
    }
    const auth = parseAuthorization(authorization);
    const { dateHeader, longDate, time } = requestTime(req.headers);
    if (!auth.signedHeaders.includes('host')) {
      throw incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.");
    }
    if (!auth.signedHeaders.includes(dateHeader)) {
      throw incomplete(`'${dateHeader === 'date' ? 'Date' : 'X-Amz-Date'}' must be a 'SignedHeader' in the AWS Authorization.`);
    }
    // The operation name travels in a header: unsigned, a captured request could be replayed
    // as another operation with the same body shape (EnableKey as ScheduleKeyDeletion). Every
    // AWS SDK and the CLI sign it.
    if (req.headers['x-amz-target'] !== undefined && !auth.signedHeaders.includes('x-amz-target')) {
      throw incomplete("'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.");
    }
    // An integrated service's claim to call for another principal is part of what it signs.
    if (req.headers[ON_BEHALF_OF_HEADER] !== undefined && !auth.signedHeaders.includes(ON_BEHALF_OF_HEADER)) {
      throw incomplete("'X-P11kms-On-Behalf-Of' must be a 'SignedHeader' in the AWS Authorization.");
    }
    // We issue no session tokens, so any token is one we cannot recognise.
    if (req.headers['x-amz-security-token'] !== undefined) throw unrecognized();
    this.checkScope(auth.scope, longDate);
    this.checkSkew(time, longDate);

    const secret = this.lookupSecret(auth.accessKeyId);
    if (secret === undefined) throw unrecognized();

    const canonicalRequest = this.canonicalRequest(req, auth.signedHeaders, this.payloadHash(req, auth.signedHeaders));

    const [date, region] = auth.scope as [string, string];
    const scope = createScope(date, region, this.opts.service);
    const stringToSign = `${ALGORITHM_IDENTIFIER}\n${longDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
    const expected = createHmac('sha256', this.signingKey(auth.accessKeyId, secret, date, region)).update(stringToSign).digest();
    // The format check only looks at the attacker's own input; the comparison itself is constant-time.
    if (!HEX_SIGNATURE.test(auth.signature) || !timingSafeEqual(expected, Buffer.from(auth.signature, 'hex'))) {
      throw invalid(MISMATCH);
    }
    return { accessKeyId: auth.accessKeyId, region };
  }

  /**
   * The canonical request. Every SDK signs the KMS API at path '/' without a query and lists its
   * signed headers in lower case, sorted and without repeats; such a request's canonical form is
   * assembled here directly, which gives the same text as the SDK's assembly (test/sigv4.test.ts
   * compares the two) at a third of its cost. Anything else takes the SDK's assembly.
   */
  canonicalRequest(req: SignedRequest, signedHeaders: string[], payloadHash: string): string {
    if (req.url === '/' && isCanonicalHeaderList(signedHeaders)) {
      const values = signedHeaderValues(req, signedHeaders);
      let lines = '';
      for (let i = 0; i < signedHeaders.length; i++) lines += `${signedHeaders[i]}:${trimHeaderValue(values[i]!)}\n`;
      return `${req.method}\n/\n\n${lines}\n${signedHeaders.join(';')}\n${payloadHash}`;
    }
    return this.sdkCanonicalRequest(req, signedHeaders, payloadHash);
  }

  /** The canonical request as the SDK's signer assembles it (any path, query and header list). */
  sdkCanonicalRequest(req: SignedRequest, signedHeaders: string[], payloadHash: string): string {
    const queryStart = req.url.indexOf('?');
    const path = queryStart < 0 ? req.url : req.url.slice(0, queryStart);
    const query = queryStart < 0 ? {} : parseQuery(req.url.slice(queryStart + 1));
    const headers = canonicalHeaders(req, signedHeaders);
    return this.canonical.build(req.method, path, query, headers, payloadHash);
  }

  private checkScope([date, region, service, terminator]: string[], longDate: string): void {
    if (terminator !== KEY_TYPE_IDENTIFIER) {
      throw invalid(`Credential should be scoped with a valid terminator: '${KEY_TYPE_IDENTIFIER}', not '${terminator}'. `);
    }
    if (service !== this.opts.service) {
      throw invalid(`Credential should be scoped to correct service: '${this.opts.service}'. `);
    }
    if (!this.regions.has(region)) {
      // AWS's first sentence; the second names what to set (AWS's endpoints serve one Region each).
      const requested = region.slice(0, 64);
      throw invalid(
        this.regions.size === 1
          ? `Credential should be scoped to a valid region. This service signs in region '${this.opts.region}', the request in '${requested}': set the client's region to ${this.opts.region}. `
          : `Credential should be scoped to a valid region. This service signs in the regions ${[...this.regions].join(', ')}, the request in '${requested}': set the client's region to one of them. `,
      );
    }
    if (date !== longDate.slice(0, 8)) {
      throw invalid(
        'Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: ' +
          `'${date}' != '${longDate.slice(0, 8)}', from '${longDate}'.`,
      );
    }
  }

  private checkSkew(time: number, longDate: string): void {
    const now = this.now().getTime();
    const skewMs = this.opts.maxSkewSeconds * 1000;
    const minutes = () => `${this.opts.maxSkewSeconds / 60} min.`;
    if (time < now - skewMs) {
      const limit = amzDate(now - skewMs);
      throw invalid(`Signature expired: ${longDate} is now earlier than ${limit} (${amzDate(now)} - ${minutes()})`);
    }
    if (time > now + skewMs) {
      const limit = amzDate(now + skewMs);
      throw invalid(`Signature not yet current: ${longDate} is still later than ${limit} (${amzDate(now)} + ${minutes()})`);
    }
  }

  /** SHA-256 of the body. A signed x-amz-content-sha256 is honoured only when it tells the truth. */
  private payloadHash(req: SignedRequest, signedHeaders: string[]): string {
    const bodyHash = sha256Hex(req.body);
    const declared = req.headers['x-amz-content-sha256'];
    if (typeof declared !== 'string' || !signedHeaders.includes('x-amz-content-sha256')) return bodyHash;
    if (declared.toLowerCase() !== bodyHash) {
      throw invalid("The provided 'x-amz-content-sha256' header does not match what was computed.");
    }
    return declared; // the client signed the header's exact text
  }

  private signingKey(accessKeyId: string, secret: string, date: string, region: string): Buffer {
    const id = `${accessKeyId}/${date}/${region}`;
    const cached = this.signingKeys.get(id);
    if (cached?.secret === secret) return cached.key;
    if (!cached && this.signingKeys.size >= MAX_CACHED_SIGNING_KEYS) {
      this.signingKeys.delete(this.signingKeys.keys().next().value!); // oldest first
    }
    let key = hmac(`AWS4${secret}`, date);
    for (const part of [region, this.opts.service, KEY_TYPE_IDENTIFIER]) key = hmac(key, part);
    this.signingKeys.set(id, { secret, key });
    return key;
  }
}

/** The Authorization header as every SDK writes it: the three parameters in this order, each value
 *  free of commas, equal signs and whitespace, a credential of five non-empty parts. The general
 *  parser below reads such a header the same way; this one reads it in one native pass. */
const SDK_AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^,=\s/]+)\/([^,=\s/]+\/[^,=\s/]+\/[^,=\s/]+\/[^,=\s/]+), ?SignedHeaders=([^,=\s]+), ?Signature=([^,=\s]+)$/;

function parseAuthorization(header: string): AuthorizationHeader {
  const sdk = SDK_AUTHORIZATION.exec(header);
  if (sdk) return { accessKeyId: sdk[1]!, scope: sdk[2]!.split('/'), signedHeaders: sdk[3]!.split(';'), signature: sdk[4]! };
  const space = header.indexOf(' ');
  const algorithm = space < 0 ? header : header.slice(0, space);
  if (algorithm !== ALGORITHM_IDENTIFIER) {
    throw incomplete(`Unsupported AWS 'algorithm': '${algorithm.slice(0, 64)}'. Only '${ALGORITHM_IDENTIFIER}' is supported.`);
  }
  const params = new Map<string, string>();
  for (const part of header.slice(space + 1).split(',')) {
    const pair = part.trim();
    const eq = pair.indexOf('=');
    if (eq < 0) {
      throw incomplete(`'${pair.slice(0, 64)}' not a valid key=value pair (missing equal-sign) in Authorization header.`);
    }
    const name = pair.slice(0, eq);
    if (params.has(name)) throw incomplete(`Authorization header has a repeated '${name.slice(0, 64)}' parameter.`);
    params.set(name, pair.slice(eq + 1));
  }
  const credential = params.get('Credential');
  const signedHeaders = params.get('SignedHeaders');
  const signature = params.get('Signature');
  if (!credential || !signature || !signedHeaders) {
    const missing = [...(credential ? [] : ['Credential']), ...(signature ? [] : ['Signature']), ...(signedHeaders ? [] : ['SignedHeaders'])];
    throw incomplete(missing.map((name) => `Authorization header requires '${name}' parameter.`).join(' '));
  }
  const [accessKeyId, ...scope] = credential!.split('/');
  if (scope.length !== 4 || !accessKeyId) {
    throw incomplete(
      'Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, ' +
        `got '${credential!.slice(0, 256)}'`,
    );
  }
  return { accessKeyId, scope, signedHeaders: signedHeaders!.split(';'), signature: signature! };
}

/** The signing time: X-Amz-Date, else the HTTP Date header (which SigV4 also allows). */
function requestTime(headers: IncomingHttpHeaders): { dateHeader: 'x-amz-date' | 'date'; longDate: string; time: number } {
  const amz = headers['x-amz-date'];
  if (typeof amz === 'string') return { dateHeader: 'x-amz-date', longDate: amz, time: parseAmzDate(amz) };
  const http = headers.date;
  if (http !== undefined) {
    const time = Date.parse(http);
    if (Number.isNaN(time)) throw incomplete(`Date header is not a valid HTTP date. Got '${http.slice(0, 64)}'.`);
    return { dateHeader: 'date', longDate: amzDate(time), time };
  }
  throw incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
}

// Under load most requests carry the same X-Amz-Date second, so remember the last one parsed.
let lastAmzDate = { text: '', time: 0 };

function parseAmzDate(text: string): number {
  if (text === lastAmzDate.text) return lastAmzDate.time;
  const m = AMZ_DATE.exec(text);
  const time = m ? Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) : NaN;
  // The round trip rejects out-of-range fields such as month 13, which Date.UTC would roll over.
  if (Number.isNaN(time) || amzDate(time) !== text) {
    const got = text.slice(0, 64);
    throw incomplete(`Date must be in ISO-8601 'basic format'. Got '${got}'. See http://en.wikipedia.org/wiki/ISO_8601`);
  }
  lastAmzDate = { text, time };
  return time;
}

/** Lower case, strictly ascending (so no repeats): the list as SDKs send it. */
function isCanonicalHeaderList(signedHeaders: string[]): boolean {
  let previous = '';
  for (const name of signedHeaders) {
    if (name <= previous || name === '__proto__' || name !== name.toLowerCase()) return false;
    previous = name;
  }
  return true;
}

/** The value of each signed header, in the order of `signedHeaders`, repeats joined as signed. */
function signedHeaderValues(req: SignedRequest, signedHeaders: string[]): string[] {
  const values: string[] = [];
  for (const name of signedHeaders) {
    // Own properties only: SignedHeaders is client input and may name 'constructor' or the like.
    const value = Object.hasOwn(req.headers, name) ? req.headers[name] : undefined;
    // A signed header the request lacks still takes part (empty), so the signature cannot match.
    values.push(typeof value === 'string' ? value : Array.isArray(value) ? value.map(foldWhitespace).join(',') : '');
  }
  // Node keeps one entry per distinct name, so equal counts mean no header was repeated; otherwise
  // node has joined repeats with ', ' or dropped them, and only rawHeaders has what was signed.
  const raw = req.rawHeaders;
  if (raw && raw.length / 2 !== Object.keys(req.headers).length) {
    const sent = new Map(signedHeaders.map((name) => [name, [] as string[]]));
    for (let i = 0; i + 1 < raw.length; i += 2) sent.get(raw[i]!.toLowerCase())?.push(foldWhitespace(raw[i + 1]!));
    signedHeaders.forEach((name, i) => {
      values[i] = sent.get(name)!.join(',');
    });
  }
  return values;
}

/** Values of the signed headers, for the SDK's getCanonicalHeaders to trim, fold and sort. */
function canonicalHeaders(req: SignedRequest, signedHeaders: string[]): Record<string, string> {
  const list = signedHeaderValues(req, signedHeaders);
  const values: Record<string, string> = {};
  signedHeaders.forEach((name, i) => {
    values[name] = list[i]!;
  });
  const signable = new Set(signedHeaders); // signed names win over the SDK's never-sign list (user-agent…)
  return getCanonicalHeaders({ headers: values } as unknown as SmithyRequest, undefined, signable) as Record<string, string>;
}

/** getCanonicalHeaders' rule for a value: line breaks become spaces, runs of spaces and tabs one
 *  space, no space at either end. Most values need none of it. */
function trimHeaderValue(value: string): string {
  if (!NEEDS_TRIMMING.test(value)) return value;
  return value.replace(/[\r\n]/g, ' ').replace(/[ \t]+/g, ' ').replace(/^ | $/g, '');
}
const NEEDS_TRIMMING = /[\r\n\t]| {2}|^ | $/;

/** Query parameters decoded, as the SDK held them before escaping; repeated keys become arrays. */
function parseQuery(search: string): QueryBag {
  const query: Record<string, string | string[]> = Object.create(null);
  for (const pair of search.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = decode(eq < 0 ? pair : pair.slice(0, eq));
    const value = eq < 0 ? '' : decode(pair.slice(eq + 1)); // a bare key is signed as 'key=' (botocore, AWS docs)
    const previous = query[key];
    query[key] = previous === undefined ? value : [previous, value].flat();
  }
  return query;
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // malformed escapes: canonicalise the raw text rather than fail here
  }
}

/** Same rule as getCanonicalHeaders, applied per value before multi-value joining. */
const foldWhitespace = (value: string) => value.replace(/[ \t]+/g, ' ').replace(/^ | $/g, '');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
/** 20260101T000000Z */
const amzDate = (time: number) => new Date(time).toISOString().replace(/[-:]|\.\d{3}/g, '');
