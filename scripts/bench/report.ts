/**
 * The Markdown the bench prints: the machine, then (1) HTTP throughput and latency per wrk point
 * and (2) token, event-loop and scale figures, each beside its ratio to the bare node:http server
 * and to the raw token rate, and beside its target (reported, never asserted); then (3) asymmetric
 * and HMAC operations beside their raw token rates, (4) authorization cost and (5) audit cost. A
 * phase that failed shows up as a FAILED line instead of its figures; a phase not selected by
 * BENCH_PHASES is left out.
 */
import { ASYM_CLIENTS, RAW_KIND_OF, type AsymOp } from './asym.js';
import { AUDIT_CLIENTS } from './audit.js';
import { FRONTDOOR_CLIENTS } from './frontdoor.js';
import { AUTHZ_CLIENTS } from './authz.js';
import { median } from './common.js';
import { machineMarkdown } from './machine.js';
import { NODES_CLIENTS, NODE_SETUPS } from './nodes.js';
import type { Results } from './run.js';
import type { BesideLoad } from './targets.js';
import type { WrkResult } from './wrk.js';

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) => (n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : Math.round(n).toString()) + ' ms';
const x = (n: number) =>
  !Number.isFinite(n) ? '—' : n >= 100 ? `${Math.round(n)}×` : n >= 10 ? `${n.toFixed(1)}×` : n >= 0.1 ? `${n.toFixed(2)}×` : `${Number(n.toPrecision(2))}×`;
const mb = (mib: number) => `${Math.round(mib * 1.048576)} MB`;
const mark = (ok: boolean) => (ok ? '✅' : '❌');
/** First line of a failure, plus the first line of its output that names an error. */
function oneLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const detail = lines.slice(1).find((l) => /^\w*Error\b|ERR_|CKR_|"level":(50|60)/.test(l));
  return `${lines[0] ?? ''}${detail ? ` ${detail}` : ''}`.replace(/\|/g, '\\|').slice(0, 400);
}

function row(cells: string[]): string {
  return `| ${cells.join(' | ')} |`;
}

export function renderMarkdown(r: Results): string {
  const rawRate = r.token?.rawPkcs11.opsPerSec ?? NaN;
  const rawOpMs = 1000 / rawRate;
  const bareAt = (clients: number): WrkResult | undefined => r.http?.bare.find((b) => b.clients === clients);
  const lat = (value: number, bare: number | undefined) =>
    `${ms(value)} (${bare === undefined ? '' : `${x(value / bare)} bare, `}${x(value / rawOpMs)} raw op)`;

  const lines: string[] = [];
  lines.push(`## p11kms benchmark`, '');
  lines.push(machineMarkdown(r.machine));
  lines.push(
    `- ${r.settings.seconds} s per wrk point (wrk -t1, -t2 at 32 clients, keep-alive, one pre-signed SigV4 request replayed)${r.settings.quick ? ' (BENCH_QUICK)' : ''}; ` +
      `token loops ${r.settings.tokenSeconds} s; service log level warn (info in the targets table); ${r.settings.workers ? `P11KMS_WORKERS=${r.settings.workers}` : 'one service process'}; ` +
      `run ${r.startedAt}, ${Math.round(r.durationSeconds)} s in all`,
    '',
  );
  for (const [phase, why] of Object.entries(r.failures)) lines.push(`**FAILED: ${phase}**: ${oneLine(why)}`, '');

  const ran = (phase: string) => r.settings.phases === undefined || (r.settings.phases as string[]).includes(phase);
  lines.push(`Phases: ${(r.settings.phases ?? []).join(', ')}`, '');

  // ---- table 1: HTTP ----
  if (ran('http')) lines.push(`### HTTP, awsJson1_1 + SigV4 over loopback (10 keys)`, '');
  if (!ran('http')) {
    // not selected
  } else if (r.http) {
    lines.push(row(['Request', 'Clients', 'req/s', '÷ bare node:http', '÷ raw token', 'p50', 'p99', 'Target']));
    lines.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---']));
    const httpRow = (name: string, w: WrkResult, isBare: boolean) => {
      const bare = bareAt(w.clients);
      const targets: string[] = [];
      if (!isBare && name === 'Encrypt 32 B' && w.clients === 32) targets.push(`≥ 12,000 req/s ${mark(w.rps >= 12_000)}`);
      if (!isBare && w.clients === 8) targets.push(`p99 ≤ 5 ms ${mark(w.p99Ms <= 5)}`);
      return row([
        name,
        String(w.clients),
        int(w.rps),
        isBare ? '1.00×' : x(w.rps / (bare?.rps ?? NaN)),
        x(w.rps / rawRate),
        lat(w.p50Ms, isBare ? undefined : bare?.p50Ms),
        lat(w.p99Ms, isBare ? undefined : bare?.p99Ms),
        targets.join(', '),
      ]);
    };
    const names: Record<string, string> = { Encrypt: 'Encrypt 32 B', Decrypt: 'Decrypt', GenerateDataKey: 'GenerateDataKey AES_256' };
    for (const op of ['Encrypt', 'Decrypt', 'GenerateDataKey']) {
      for (const w of r.http.p11kms.filter((p) => p.label === op)) lines.push(httpRow(names[op]!, w, false));
    }
    for (const w of r.http.bare) lines.push(httpRow('bare node:http (Encrypt-shaped reply)', w, true));
    lines.push('');
    lines.push(
      `req/s ÷ raw token = HTTP rate over the raw pkcs11js AES-GCM rate (${int(rawRate)} ops/s). ` +
        `Latency cells: value (÷ bare node:http at the same client count, ÷ one raw token op = ${(rawOpMs * 1000).toFixed(1)} µs).`,
      '',
    );
  } else {
    lines.push('FAILED (see above).', '');
  }

  // ---- table 2: token, event loop, scale ----
  const bare1 = bareAt(1);
  const bare8 = bareAt(8);
  const bare32 = bareAt(32);
  const table2 = ran('token') || ran('loop') || ran('scale') || ran('http');
  if (table2) {
    lines.push(`### Token, event loop, scale`, '');
    lines.push(row(['Measure', 'Value', '÷ bare node:http', '÷ raw token', 'Target']));
    lines.push(row(['---', '---:', '---:', '---:', '---']));
    const failedRow = (name: string, phase: string) => lines.push(row([name, `FAILED: ${oneLine(r.failures[phase] ?? 'not run')}`, '—', '—', '']));

    if (!ran('token')) {
      // not selected
    } else if (r.token) {
      const rateRow = (name: string, rate: number) => row([name, `${int(rate)} ops/s (${(1e6 / rate).toFixed(1)} µs/op)`, x(rate / (bare32?.rps ?? NaN)), x(rate / rawRate), '']);
      lines.push(rateRow('Raw token: pkcs11js C_EncryptInit+C_Encrypt, AES-256-GCM 32 B, token key, sync', rawRate));
      lines.push(rateRow('p11kms Hsm.encryptAesGcm (same op through the project wrapper, sync mode)', r.token.hsmWrapper.opsPerSec));
      lines.push(rateRow("Node's crypto AES-256-GCM 32 B", r.token.nodeCrypto.opsPerSec));
    } else {
      failedRow('Raw token / Hsm wrapper / Node crypto AES-256-GCM 32 B', 'token baselines');
    }

    const l = r.loopDelay;
    if (!ran('loop')) {
      // not selected
    } else if (l) {
      const failed = l.failed > 0 ? `; **${int(l.failed)} failed**: ${oneLine(l.errors[0]?.message ?? '')}` : '';
      lines.push(
        row([
          `${int(l.keygens)} concurrent hsm.generateAesKey (pool ${l.poolSize} sessions, slow lane)`,
          `${(l.totalMs / 1000).toFixed(1)} s, ${int(l.keysPerSec)} keys/s${failed}`,
          '—',
          x(l.keysPerSec / rawRate),
          '',
        ]),
      );
      lines.push(
        row([
          `Event-loop delay during those key generations (monitorEventLoopDelay, ${l.resolutionMs} ms sampling; idle p99 ${ms(l.idle.p99Ms)}, max ${ms(l.idle.maxMs)})`,
          `p99 ${ms(l.busy.p99Ms)}, max ${ms(l.busy.maxMs)}`,
          '—',
          `p99 ${x(l.busy.p99Ms / rawOpMs)} raw op`,
          '',
        ]),
      );
    } else {
      failedRow('Concurrent hsm.generateAesKey and event-loop delay', 'event-loop delay');
    }

    const s = r.scale;
    if (!ran('scale')) {
      // not selected
    } else if (s) {
      const keys = s.createStoppedByDeadline
        ? `${int(s.keys)} of ${int(s.keysWanted)} keys (stopped after BENCH_CREATE_SECONDS=${r.settings.createSeconds})`
        : s.createFailed > 0
          ? `${int(s.keys)} of ${int(s.keysWanted)} keys`
          : `${int(s.keys)} keys`;
      const createFailed = s.createFailed > 0 ? `; **${int(s.createFailed)} failed**: ${oneLine(s.createErrors[0]?.message ?? '')}` : '';
      lines.push(
        row([
          `CreateKey through the API (@aws-sdk/client-kms, ${s.concurrency} concurrent), ${keys}`,
          `${s.createSeconds.toFixed(1)} s; ${s.keysPerSecAlone === undefined ? 'n/a' : int(s.keysPerSecAlone)} keys/s alone, ${int(s.keysPerSecUnderLoad)} keys/s beside the Encrypt load below${createFailed}`,
          '—',
          s.keysPerSecAlone === undefined ? '—' : x(s.keysPerSecAlone / rawRate),
          '',
        ]),
      );
      const e = s.encryptDuringCreate;
      lines.push(
        row([
          `Encrypt at 8 clients while CreateKey ×${s.concurrency} runs (${int(s.keysCreatedDuringLoad)} keys created meanwhile)`,
          `${int(e.rps)} req/s, p50 ${ms(e.p50Ms)}, p99 ${ms(e.p99Ms)}`,
          `${x(e.rps / (bare8?.rps ?? NaN))} req/s, p99 ${x(e.p99Ms / (bare8?.p99Ms ?? NaN))}`,
          x(e.rps / rawRate),
          `p99 ≤ 5 ms ${mark(e.p99Ms <= 5)}`,
        ]),
      );
      for (const [i, clients] of [1, 8].entries()) {
        const ten = s.tenKeys[i]!;
        const many = s.manyKeys[i]!;
        const bare = clients === 1 ? bare1 : bare8;
        const who = `${clients} client${clients > 1 ? 's' : ''}`;
        lines.push(row([`Encrypt p50, ${who}, 10 keys (reference for the next row)`, ms(ten.p50Ms), x(ten.p50Ms / (bare?.p50Ms ?? NaN)), `${x(ten.p50Ms / rawOpMs)} raw op`, '']));
        const ratio = many.p50Ms / ten.p50Ms;
        lines.push(
          row([
            `Encrypt p50, ${who}, ${int(s.keys)} keys`,
            `${ms(many.p50Ms)} = ${x(ratio)} the 10-key p50`,
            x(many.p50Ms / (bare?.p50Ms ?? NaN)),
            `${x(many.p50Ms / rawOpMs)} raw op`,
            `≤ 1.2× ${mark(ratio <= 1.2)}`,
          ]),
        );
      }
      const ar = s.afterRestart;
      lines.push(
        row([
          `Encrypt at 8 clients after a restart with ${int(s.keys)} keys (another key)`,
          `${int(ar.rps)} req/s, p50 ${ms(ar.p50Ms)}, p99 ${ms(ar.p99Ms)}`,
          `${x(ar.rps / (bare8?.rps ?? NaN))} req/s, p50 ${x(ar.p50Ms / (bare8?.p50Ms ?? NaN))}`,
          x(ar.rps / rawRate),
          '',
        ]),
      );
      const procs = s.processes > 1 ? ` (${s.processes} processes)` : '';
      lines.push(
        row([
          `Service RSS after the ${int(s.keys)}-key run${procs}`,
          `${mb(s.rssAfterRunMiB)} (${mb(s.rssAfterRestartMiB)} after restart + load)`,
          x(s.rssAfterRunMiB / (r.main?.bareRssMiB ?? NaN)),
          '—',
          `≤ 200 MB ${mark(s.rssAfterRunMiB * 1.048576 <= 200)}`,
        ]),
      );
    } else {
      failedRow('CreateKey ×N, Encrypt with many keys, RSS, start-up with many keys', 'scale');
    }

    const m = r.main;
    if (m) {
      lines.push(row([`Service RSS after the HTTP table above (10 keys)${m.processes > 1 ? ` (${m.processes} processes)` : ''}`, mb(m.rssMiB), x(m.rssMiB / m.bareRssMiB), '—', `≤ 200 MB ${mark(m.rssMiB * 1.048576 <= 200)}`]));
      lines.push(row(['Bare node:http RSS after its load', mb(m.bareRssMiB), '1.00×', '—', '']));
    }
    if (s) {
      lines.push(
        row([
          `Start-up with ${int(s.keys)} keys (spawn → first 200 on GET /healthz)`,
          ms(s.startupMs),
          x(s.startupMs / (m?.bareStartupMs ?? NaN)),
          '—',
          `≤ 3 s ${mark(s.startupMs <= 3000)}`,
        ]),
      );
    }
    if (m) {
      const scaleEmpty = s ? `, ${ms(s.startupEmptyMs)} (scale service)` : '';
      lines.push(row(['Start-up, empty data dir (provisions the SoftHSM2 token)', `${ms(m.startupEmptyMs)} (HTTP-table service)${scaleEmpty}`, x(m.startupEmptyMs / m.bareStartupMs), '—', '']));
      lines.push(row(['Bare node:http start-up (spawn → first 200)', ms(m.bareStartupMs), '1.00×', '—', '']));
    }
    lines.push('');
    lines.push(
      "÷ bare node:http: token rates over the bare server's req/s at 32 clients; HTTP figures over the bare server at the same client count; " +
        "RSS and start-up over the bare server's. ÷ raw token: rates over the raw pkcs11js rate; latencies over one raw token op. " +
        'RSS is VmRSS (/proc) of the whole service process tree. Targets are reported, not asserted.' +
        (s ? ` 10-key reference p50s come from ${s.tenKeysSource}.` : '') +
        (r.token ? ` Token rates: median of ${r.token.rawPkcs11.rounds.length} alternating rounds (raw, wrapper, Node), ${r.settings.tokenSeconds} s per kind in all.` : ''),
      '',
    );
  }

  if (ran('targets')) targetsMarkdown(r, lines);
  if (ran('asym')) asymMarkdown(r, lines);
  if (ran('authz')) authzMarkdown(r, lines);
  if (ran('audit')) auditMarkdown(r, lines);
  if (ran('frontdoor')) frontDoorMarkdown(r, lines);
  if (ran('nodes')) nodesMarkdown(r, lines);
  return `${lines.join('\n')}\n`;
}

/** Median req/s, p50 and p99 of the points at `clients`. */
function med(points: WrkResult[], clients: number): { rps: number; p50Ms: number; p99Ms: number; n: number } {
  const at = points.filter((w) => w.clients === clients);
  if (at.length === 0) return { rps: NaN, p50Ms: NaN, p99Ms: NaN, n: 0 };
  return { rps: median(at.map((w) => w.rps)), p50Ms: median(at.map((w) => w.p50Ms)), p99Ms: median(at.map((w) => w.p99Ms)), n: at.length };
}

function asymMarkdown(r: Results, lines: string[]): void {
  lines.push('### Asymmetric signatures and HMAC over HTTP (issue 3)', '');
  if (r.failures['asym token baselines']) lines.push(`Raw token rates FAILED: ${oneLine(r.failures['asym token baselines'])}`, '');
  const a = r.asym;
  if (!a) {
    lines.push(`FAILED: ${oneLine(r.failures['asym'] ?? 'not run')}`, '');
    return;
  }
  const rawOf = (op: AsymOp) => r.asymToken?.rates.find((x) => x.kind === RAW_KIND_OF[op]);
  lines.push(row(['Request', 'Clients', 'req/s', '÷ raw token (same op)', 'p50', 'p99', 'Raw token op (pkcs11js, 1 session, sync)']));
  lines.push(row(['---', '---:', '---:', '---:', '---:', '---:', '---']));
  const ops = [...new Set(a.points.map((p) => p.label))] as AsymOp[];
  for (const op of ops) {
    const raw = rawOf(op);
    const rawMs = raw ? 1000 / raw.opsPerSec : NaN;
    for (const clients of ASYM_CLIENTS) {
      const w = a.points.find((p) => p.label === op && p.clients === clients);
      if (!w) continue;
      lines.push(
        row([
          op,
          String(clients),
          int(w.rps),
          raw ? x(w.rps / raw.opsPerSec) : '—',
          `${ms(w.p50Ms)}${raw ? ` (${x(w.p50Ms / rawMs)} raw op)` : ''}`,
          `${ms(w.p99Ms)}${raw ? ` (${x(w.p99Ms / rawMs)} raw op)` : ''}`,
          raw ? `${int(raw.opsPerSec)} ops/s (${(1e6 / raw.opsPerSec).toFixed(1)} µs/op)` : '—',
        ]),
      );
    }
  }
  lines.push('');
  if (r.asymToken) {
    lines.push(
      `Raw token loops (median of ${r.asymToken.rates[0]?.rounds.length ?? 0} alternating rounds, ${r.settings.tokenSeconds} s per op in all): ` +
        r.asymToken.rates.map((x) => `${x.kind}: ${x.mechanism}`).join('; ') +
        '. The service hashes RAW messages itself and feeds the token the digest, as these loops do; RSA and ECDSA signing run in the slow lane (threads of our own), HMAC on the request path.',
      '',
    );
  }
  const created = Object.entries(a.createKeyMs).map(([spec, t]) => `${spec} ${ms(t)}`).join(', ');
  lines.push(`CreateKey (one each, through the API): ${created}.`, '');
  const b = a.beside;
  if (b) {
    lines.push(row(['Encrypt 32 B, 8 clients', 'req/s', 'p50', 'p99', 'p99 ÷ alone', 'Target']));
    lines.push(row(['---', '---:', '---:', '---:', '---:', '---']));
    lines.push(row(['alone', int(b.without.rps), ms(b.without.p50Ms), ms(b.without.p99Ms), '1.00×', `p99 ≤ 5 ms ${mark(b.without.p99Ms <= 5)}`]));
    lines.push(
      row([
        `beside ${b.concurrency} concurrent RSA-4096 CreateKey loops (${b.createdDuringPoint} keys finished during the point, ${b.created} in all; median CreateKey ${b.createMedianMs === undefined ? 'n/a' : ms(b.createMedianMs)})`,
        int(b.with.rps),
        ms(b.with.p50Ms),
        ms(b.with.p99Ms),
        x(b.with.p99Ms / b.without.p99Ms),
        `p99 ≤ 5 ms ${mark(b.with.p99Ms <= 5)}`,
      ]),
    );
    lines.push('');
  } else if (r.settings.rsa4096Concurrency > 0) {
    lines.push(`Encrypt beside RSA-4096 CreateKey: FAILED: ${oneLine(r.failures['asym: Encrypt beside RSA-4096 CreateKey'] ?? 'not run')}`, '');
  }
}

function authzMarkdown(r: Results, lines: string[]): void {
  lines.push('### Authorization cost, Encrypt 32 B (issue 4)', '');
  const z = r.authz;
  if (!z) {
    lines.push(`FAILED: ${oneLine(r.failures['authz'] ?? 'not run')}`, '');
    return;
  }
  lines.push(row(['Clients', '(a) root, default key policy: req/s', 'p50', 'p99', `(b) IAM user, ${z.keyPolicyStatements}-statement key policy + ${z.identityPolicyStatements}-statement identity policy, ${z.grants} grants: req/s`, 'p50', 'p99', '(b) ÷ (a) req/s', '(b) ÷ (a) p50']));
  lines.push(row(['---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']));
  for (const clients of AUTHZ_CLIENTS) {
    const a = med(z.root, clients);
    const b = med(z.user, clients);
    lines.push(row([String(clients), int(a.rps), ms(a.p50Ms), ms(a.p99Ms), int(b.rps), ms(b.p50Ms), ms(b.p99Ms), `**${(b.rps / a.rps).toFixed(3)}**`, (b.p50Ms / a.p50Ms).toFixed(3)]));
  }
  lines.push('', `One service process for both; points alternate (a)/(b), order swapped each round; median of ${z.rounds} round(s). No encryption context.`, '');
}

function auditMarkdown(r: Results, lines: string[]): void {
  lines.push('### Audit cost, Encrypt 32 B (issue 6)', '');
  const d = r.audit;
  if (!d) {
    lines.push(`FAILED: ${oneLine(r.failures['audit'] ?? 'not run')}`, '');
    return;
  }
  lines.push(row(['Clients', 'audit on: req/s', 'p50', 'p99', 'P11KMS_AUDIT=off: req/s', 'p50', 'p99', 'on ÷ off req/s', 'on ÷ off p99']));
  lines.push(row(['---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']));
  for (const clients of AUDIT_CLIENTS) {
    const on = med(d.on, clients);
    const off = med(d.off, clients);
    lines.push(row([String(clients), int(on.rps), ms(on.p50Ms), ms(on.p99Ms), int(off.rps), ms(off.p50Ms), ms(off.p99Ms), `**${(on.rps / off.rps).toFixed(3)}**`, (on.p99Ms / off.p99Ms).toFixed(3)]));
  }
  lines.push('', `Two services side by side (same settings but P11KMS_AUDIT), one key each; points alternate on/off, order swapped each round; median of ${d.rounds} round(s).`, '');
}

function frontDoorMarkdown(r: Results, lines: string[]): void {
  lines.push('### TLS and quota cost, Encrypt 32 B (issue 12)', '');
  const d = r.frontdoor;
  if (!d) {
    lines.push(`FAILED: ${oneLine(r.failures['frontdoor'] ?? 'not run')}`, '');
    return;
  }
  lines.push(row(['Clients', 'HTTP: req/s', 'p50', 'p99', 'HTTPS: req/s', 'p50', 'p99', 'HTTP + quotas: req/s', 'p50', 'p99', 'HTTPS ÷ HTTP req/s', 'quotas ÷ HTTP req/s']));
  lines.push(row(['---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']));
  for (const clients of FRONTDOOR_CLIENTS) {
    const h = med(d.http, clients);
    const s = med(d.https, clients);
    const q = med(d.quotas, clients);
    lines.push(row([String(clients), int(h.rps), ms(h.p50Ms), ms(h.p99Ms), int(s.rps), ms(s.p50Ms), ms(s.p99Ms), int(q.rps), ms(q.p50Ms), ms(q.p99Ms), `**${(s.rps / h.rps).toFixed(3)}**`, `**${(q.rps / h.rps).toFixed(3)}**`]));
  }
  lines.push(
    '',
    `Three services side by side (plain HTTP; HTTPS with TLS 1.3 and keep-alive; plain HTTP with a quota file far above the load, so each request passes three token buckets and none throttles), one key each; points rotate among them, order shifted each round; median of ${d.rounds} round(s). The quota check alone (RequestQuotas.admit, three buckets, in the bench process): ${d.admitNs.toFixed(0)} ns per request.`,
    '',
  );
}

function nodesMarkdown(r: Results, lines: string[]): void {
  lines.push('### Several nodes on PostgreSQL beside SQLite (issue 11)', '');
  const d = r.nodes;
  if (!d) {
    lines.push(`FAILED: ${oneLine(r.failures['nodes'] ?? 'not run')}`, '');
    return;
  }
  const sqliteAt = (clients: number) => d.encrypt.find((p) => p.setup === NODE_SETUPS[0] && p.clients === clients);
  lines.push(row(['Encrypt 32 B', 'Clients', 'req/s', '÷ SQLite', 'p50', 'p99']));
  lines.push(row(['---', '---:', '---:', '---:', '---:', '---:']));
  for (const clients of NODES_CLIENTS) {
    for (const p of d.encrypt.filter((e) => e.clients === clients)) {
      lines.push(row([p.setup, String(clients), int(p.rps), x(p.rps / (sqliteAt(clients)?.rps ?? NaN)), ms(p.p50Ms), ms(p.p99Ms)]));
    }
  }
  lines.push('');
  const sqliteCreate = d.createKey.find((p) => p.setup === NODE_SETUPS[0]);
  lines.push(row(['CreateKey (8 concurrent in all)', 'keys', 'keys/s', '÷ SQLite', 'p50', 'p99']));
  lines.push(row(['---', '---:', '---:', '---:', '---:', '---:']));
  for (const p of d.createKey) lines.push(row([p.setup, int(p.keys), int(p.keysPerSec), x(p.keysPerSec / (sqliteCreate?.keysPerSec ?? NaN)), ms(p.p50Ms), ms(p.p99Ms)]));
  lines.push(
    '',
    `The database per request (measured in the bench process, PostgreSQL ${d.postgresVersion} on loopback with fsync and synchronous commit): ` +
      `a round trip (SELECT 1) ${ms(d.roundTripMs)}; MetadataStore.createKey ${ms(d.storeCreateKeyMs.postgres)} on PostgreSQL, ${ms(d.storeCreateKeyMs.sqlite)} on SQLite; ` +
      `getKey of an uncached key ${ms(d.storeGetKeyUncachedMs.postgres)} vs ${ms(d.storeGetKeyUncachedMs.sqlite)}. ` +
      'Encrypt of a cached key makes no database round trip on either. Two nodes: one wrk per node at the same time, the clients split, req/s summed, latency of the slower node. ' +
      'The PostgreSQL nodes share one SoftHSM2 token and serialise its object writes through its lock file; the SQLite service has its own token without that lock, ' +
      'and P11KMS_WORKERS=2 on SQLite takes the same lock (its CreateKey row separates the lock from the database).',
    '',
  );
}

function targetsMarkdown(r: Results, lines: string[]): void {
  lines.push('### Targets: Encrypt 32 B beside the bare server, the raw token and a peer (issue 15)', '');
  const t = r.targets;
  if (!t) {
    lines.push(`FAILED: ${oneLine(r.failures['targets'] ?? 'not run')}`, '');
    return;
  }
  const rawRate = r.token?.rawPkcs11.opsPerSec ?? NaN;
  const rawOpMs = 1000 / rawRate;
  const bare = (clients: number) => t.bare.find((b) => b.clients === clients);
  const mine = (clients: number) => t.encrypt.find((b) => b.clients === clients);
  const peer = 'skipped' in t.peer ? undefined : t.peer;
  const peerAt = (clients: number) => (peer ? (clients === 32 ? peer.c32 : peer.c8) : undefined);
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? '—' : x(a / b));
  const failed = (scenario: string) => `FAILED: ${oneLine(t.errors[scenario] ?? 'not run')}`;
  lines.push(row(['Scenario', 'p11kms', '÷ bare node:http', '÷ raw token', '÷ peer', 'Target']));
  lines.push(row(['---', '---:', '---:', '---:', '---:', '---']));
  const rateRow = (name: string, w: WrkResult | undefined, target: number, scenario: string) => {
    if (!w) return lines.push(row([name, failed(scenario), '—', '—', '—', '']));
    const toBare = w.rps / (bare(32)?.rps ?? NaN);
    lines.push(row([name, `${int(w.rps)} req/s (p99 ${ms(w.p99Ms)})`, x(toBare), x(w.rps / rawRate), ratio(w.rps, peerAt(32)?.rps), `≥ ${target}× bare ${mark(toBare >= target)}`]));
  };
  rateRow('Encrypt, 32 clients, one process', mine(32), 0.35, 'Encrypt');
  rateRow('Encrypt, 32 clients, P11KMS_WORKERS=2', t.encryptWorkers2, 0.45, 'P11KMS_WORKERS=2');
  const e8 = mine(8);
  if (e8) {
    lines.push(row(['Encrypt p99, 8 clients, audit trail on', `${ms(e8.p99Ms)} (${int(e8.rps)} req/s)`, ratio(e8.p99Ms, bare(8)?.p99Ms), `${x(e8.p99Ms / rawOpMs)} raw op`, ratio(e8.p99Ms, peerAt(8)?.p99Ms), `≤ 3 ms ${mark(e8.p99Ms <= 3)}`]));
  }
  const beside = (name: string, b: BesideLoad | undefined, scenario: string, rateTarget: boolean) => {
    if (!b) return lines.push(row([name, failed(scenario), '—', '—', '—', '']));
    const rps = b.loaded.rps / b.alone.rps;
    const p99 = b.loaded.p99Ms / b.alone.p99Ms;
    const calls = `${b.createdDuringPoint} finished during the point${b.createMedianMs === undefined ? '' : `, median ${ms(b.createMedianMs)}`}`;
    lines.push(
      row([
        `${name} (${calls})`,
        `${int(b.loaded.rps)} req/s = ${x(rps)} alone; p99 ${ms(b.loaded.p99Ms)} = ${x(p99)} alone (${ms(b.alone.p99Ms)})`,
        x(b.loaded.rps / (bare(8)?.rps ?? NaN)),
        x(b.loaded.rps / rawRate),
        '—',
        rateTarget ? `≥ 0.7× alone req/s ${mark(rps >= 0.7)}` : `p99 ≤ 2× alone ${mark(p99 <= 2)}`,
      ]),
    );
  };
  beside('Encrypt, 8 clients, while CreateKey runs 8 in flight', t.duringCreateKey, 'Encrypt during CreateKey', true);
  const l = t.sqliteLock;
  if (l) {
    for (const [op, alone, locked] of [['Encrypt', l.encryptAlone, l.encrypt], ['Decrypt', l.decryptAlone, l.decrypt]] as const) {
      const p99 = locked.p99Ms / alone.p99Ms;
      const rps = locked.rps / alone.rps;
      // A request stalled past the point's end never reaches wrk's latencies: a collapsed rate
      // is the stall's other sign, so the target needs both.
      lines.push(
        row([
          `${op}, 8 clients, while an outside process holds the SQLite write lock (${l.holdSeconds} s; ${locked.seconds} s point)`,
          `p99 ${ms(locked.p99Ms)} = ${x(p99)} alone (${ms(alone.p99Ms)}); ${int(locked.rps)} req/s = ${x(rps)} alone`,
          x(locked.rps / (bare(8)?.rps ?? NaN)),
          x(locked.rps / rawRate),
          '—',
          `p99 ≤ 2× alone and req/s ≥ 0.5× alone ${mark(p99 <= 2 && rps >= 0.5)}`,
        ]),
      );
    }
    const w = l.writes;
    const errs = Object.entries(w.errors).map(([name, n]) => `${n}× ${name}`).join(', ') || 'none';
    lines.push(row([`CreateKey, one at a time, during that lock`, `${w.calls} calls: ${w.ok} succeeded, errors ${errs}; p50 ${ms(w.p50Ms)}, max ${ms(w.maxMs)}`, '—', '—', '—', 'queue, or fail retryably after a bound']));
  } else {
    lines.push(row(['Encrypt / Decrypt while the SQLite write lock is held', failed('SQLite write lock'), '—', '—', '—', '']));
  }
  beside('Encrypt, 8 clients, while 4 CreateKey RSA_4096 are kept in flight', t.besideRsa4096, 'Encrypt beside RSA-4096 CreateKey', false);
  for (const clients of [32, 8]) {
    const b = bare(clients);
    if (b) lines.push(row([`bare node:http (Encrypt-shaped reply), ${clients} clients`, `${int(b.rps)} req/s (p99 ${ms(b.p99Ms)})`, '1.00×', x(b.rps / rawRate), ratio(b.rps, peerAt(clients)?.rps), '']));
  }
  const d = t.diskSync;
  if (d) lines.push(row([`the disk alone: O_DSYNC ${int(d.bytes)} B append (an audit batch), ${int(d.writes)} in a row`, `p50 ${ms(d.p50Ms)}, p99 ${ms(d.p99Ms)}, max ${ms(d.maxMs)}`, '—', '—', '—', 'the audit p99 cannot go below this']));
  if (r.token) lines.push(row(['raw token: pkcs11js AES-256-GCM 32 B, token key, one session, sync', `${int(rawRate)} ops/s (${(rawOpMs * 1000).toFixed(1)} µs/op)`, x(rawRate / (bare(32)?.rps ?? NaN)), '1.00×', '—', '']));
  for (const clients of [32, 8]) {
    const p = peerAt(clients);
    if (p) lines.push(row([`peer (${peer!.bin}), Encrypt, ${clients} clients`, `${int(p.rps)} req/s (p99 ${ms(p.p99Ms)})`, x(p.rps / (bare(clients)?.rps ?? NaN)), x(p.rps / rawRate), '1.00×', '']));
  }
  if ('skipped' in t.peer) lines.push(row(['peer', `skipped: ${oneLine(t.peer.skipped)}`, '—', '—', '—', '']));
  lines.push(
    '',
    'One service process (SQLite, audit trail on, log level info so the per-request line is paid) and, for the P11KMS_WORKERS=2 row, a second service on its own data dir; ' +
      'rates at 32 clients are divided by the bare server at 32 clients, the rest by the bare server at 8. ' +
      '÷ raw token: req/s over the raw token rate of the token phase (—: token phase not run). ' +
      'Each "alone" reference is measured on the same service right before its loaded point. ' +
      'The SQLite lock is BEGIN IMMEDIATE by another process (better-sqlite3) on the service\'s database file. ' +
      'The peer column runs BENCH_PEER_BIN on loopback (skipped when unset). Targets are reported, not asserted.',
    '',
  );
}
