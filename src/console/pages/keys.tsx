/** Keys: a page of ListKeys at a time, described, with search, filters and the create dialog. */
import {
  CreateKeyCommand,
  type CreateKeyCommandOutput,
  DescribeKeyCommand,
  type DescribeKeyCommandOutput,
  GetKeyRotationStatusCommand,
  type GetKeyRotationStatusCommandOutput,
  ListAliasesCommand,
  type ListAliasesCommandOutput,
  ListKeysCommand,
  type ListKeysCommandOutput,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import { useState } from 'preact/hooks';
import { kms } from '../api';
import { Dialog, ErrorBanner, Field, useAction, useAsync, when } from '../components';

const PAGE_SIZE = 25;

interface Row {
  meta: KeyMetadata;
  aliases: string[];
  rotation: string;
}

async function loadPage(marker: string | undefined): Promise<{ rows: Row[]; next?: string }> {
  const page = await kms<ListKeysCommandOutput>(new ListKeysCommand({ Limit: PAGE_SIZE, Marker: marker }));
  const aliases = await allAliases();
  const rows = await Promise.all(
    (page.Keys ?? []).map(async (k) => {
      const meta = (await kms<DescribeKeyCommandOutput>(new DescribeKeyCommand({ KeyId: k.KeyId! }))).KeyMetadata!;
      let rotation = '—';
      if (meta.KeySpec === 'SYMMETRIC_DEFAULT' && meta.KeyManager === 'CUSTOMER' && meta.Origin === 'AWS_KMS') {
        try {
          const r = await kms<GetKeyRotationStatusCommandOutput>(new GetKeyRotationStatusCommand({ KeyId: k.KeyId! }));
          rotation = r.KeyRotationEnabled ? `every ${r.RotationPeriodInDays} days` : 'off';
        } catch {
          rotation = '?';
        }
      }
      return { meta, aliases: aliases.get(k.KeyId!) ?? [], rotation };
    }),
  );
  return { rows, next: page.Truncated ? page.NextMarker : undefined };
}

async function allAliases(): Promise<Map<string, string[]>> {
  const byKey = new Map<string, string[]>();
  let marker: string | undefined;
  do {
    const page = await kms<ListAliasesCommandOutput>(new ListAliasesCommand({ Limit: 100, Marker: marker }));
    for (const a of page.Aliases ?? []) {
      if (!a.TargetKeyId) continue;
      byKey.set(a.TargetKeyId, [...(byKey.get(a.TargetKeyId) ?? []), a.AliasName!]);
    }
    marker = page.Truncated ? page.NextMarker : undefined;
  } while (marker);
  return byKey;
}

export function KeysPage() {
  const [markers, setMarkers] = useState<(string | undefined)[]>([undefined]);
  const marker = markers[markers.length - 1];
  const page = useAsync(() => loadPage(marker), [marker]);
  const [search, setSearch] = useState('');
  const [state, setState] = useState('');
  const [spec, setSpec] = useState('');
  const [creating, setCreating] = useState(false);
  const rows = (page.value?.rows ?? []).filter((r) => {
    const text = `${r.meta.KeyId} ${r.aliases.join(' ')} ${r.meta.Description ?? ''}`.toLowerCase();
    return (!search || text.includes(search.toLowerCase())) && (!state || r.meta.KeyState === state) && (!spec || r.meta.KeySpec === spec);
  });
  const specs = [...new Set((page.value?.rows ?? []).map((r) => r.meta.KeySpec!))].sort();
  return (
    <section aria-labelledby="keys-title">
      <div class="toolbar">
        <h1 id="keys-title">Keys</h1>
        <button type="button" onClick={() => setCreating(true)}>
          Create key
        </button>
      </div>
      <div class="filters">
        <Field id="key-search" label="Search">
          <input id="key-search" type="search" placeholder="alias, key ID or description" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
        </Field>
        <Field id="key-state-filter" label="State">
          <select id="key-state-filter" value={state} onChange={(e) => setState(e.currentTarget.value)}>
            <option value="">any</option>
            {['Enabled', 'Disabled', 'PendingDeletion', 'PendingImport'].map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </Field>
        <Field id="key-spec-filter" label="Key spec">
          <select id="key-spec-filter" value={spec} onChange={(e) => setSpec(e.currentTarget.value)}>
            <option value="">any</option>
            {specs.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </Field>
      </div>
      <ErrorBanner error={page.error} />
      <table class="keys">
        <thead>
          <tr>
            <th scope="col">Alias</th>
            <th scope="col">Key ID</th>
            <th scope="col">Spec</th>
            <th scope="col">Usage</th>
            <th scope="col">State</th>
            <th scope="col">Origin</th>
            <th scope="col">Rotation</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.meta.KeyId}>
              <td>{r.aliases.join(', ')}</td>
              <td>
                <a href={`#/keys/${r.meta.KeyId}`}>{r.meta.KeyId}</a>
              </td>
              <td>{r.meta.KeySpec}</td>
              <td>{r.meta.KeyUsage}</td>
              <td>{r.meta.KeyState}</td>
              <td>{r.meta.Origin}</td>
              <td>{r.rotation}</td>
              <td>{when(r.meta.CreationDate)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {page.loading ? <p aria-live="polite">Loading…</p> : rows.length === 0 && !page.error ? <p>No keys on this page.</p> : null}
      <div class="pager">
        <button type="button" disabled={markers.length <= 1} onClick={() => setMarkers(markers.slice(0, -1))}>
          Previous page
        </button>
        <button type="button" disabled={!page.value?.next} onClick={() => setMarkers([...markers, page.value!.next])}>
          Next page
        </button>
      </div>
      <CreateKeyDialog
        open={creating}
        onClose={() => setCreating(false)}
        onCreated={(keyId) => {
          setCreating(false);
          window.location.hash = `#/keys/${keyId}`;
        }}
      />
    </section>
  );
}

/** KeySpec → the usages AWS allows for it (CreateKey). */
const SPECS: Record<string, string[]> = {
  SYMMETRIC_DEFAULT: ['ENCRYPT_DECRYPT'],
  RSA_2048: ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'],
  RSA_3072: ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'],
  RSA_4096: ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'],
  ECC_NIST_P256: ['SIGN_VERIFY', 'KEY_AGREEMENT'],
  ECC_NIST_P384: ['SIGN_VERIFY', 'KEY_AGREEMENT'],
  ECC_NIST_P521: ['SIGN_VERIFY', 'KEY_AGREEMENT'],
  ECC_SECG_P256K1: ['SIGN_VERIFY'],
  ECC_NIST_EDWARDS25519: ['SIGN_VERIFY'],
  HMAC_224: ['GENERATE_VERIFY_MAC'],
  HMAC_256: ['GENERATE_VERIFY_MAC'],
  HMAC_384: ['GENERATE_VERIFY_MAC'],
  HMAC_512: ['GENERATE_VERIFY_MAC'],
};

function CreateKeyDialog({ open, onClose, onCreated }: { open: boolean; onClose: () => void; onCreated: (keyId: string) => void }) {
  const [keySpec, setKeySpec] = useState('SYMMETRIC_DEFAULT');
  const [keyUsage, setKeyUsage] = useState('ENCRYPT_DECRYPT');
  const [description, setDescription] = useState('');
  const [tags, setTags] = useState('');
  const [policyMode, setPolicyMode] = useState<'default' | 'custom'>('default');
  const [policy, setPolicy] = useState('');
  const action = useAction();
  const usages = SPECS[keySpec] ?? [];
  return (
    <Dialog title="Create key" open={open} onClose={onClose}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(async () => {
            const parsedTags = tags
              .split('\n')
              .map((l) => l.trim())
              .filter(Boolean)
              .map((l) => {
                const eq = l.indexOf('=');
                return { TagKey: eq < 0 ? l : l.slice(0, eq).trim(), TagValue: eq < 0 ? '' : l.slice(eq + 1).trim() };
              });
            const out = await kms<CreateKeyCommandOutput>(
              new CreateKeyCommand({
                KeySpec: keySpec as never,
                KeyUsage: keyUsage as never,
                Description: description || undefined,
                Tags: parsedTags.length ? parsedTags : undefined,
                Policy: policyMode === 'custom' ? policy : undefined,
              }),
            );
            onCreated(out.KeyMetadata!.KeyId!);
          });
        }}
      >
        <Field id="create-spec" label="Key spec">
          <select
            id="create-spec"
            value={keySpec}
            onChange={(e) => {
              setKeySpec(e.currentTarget.value);
              setKeyUsage(SPECS[e.currentTarget.value]![0]!);
            }}
          >
            {Object.keys(SPECS).map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </Field>
        <Field id="create-usage" label="Key usage">
          <select id="create-usage" value={keyUsage} onChange={(e) => setKeyUsage(e.currentTarget.value)}>
            {usages.map((u) => (
              <option key={u}>{u}</option>
            ))}
          </select>
        </Field>
        <Field id="create-description" label="Description">
          <input id="create-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        </Field>
        <Field id="create-tags" label="Tags (one key=value per line)">
          <textarea id="create-tags" rows={3} value={tags} onInput={(e) => setTags(e.currentTarget.value)} />
        </Field>
        <fieldset>
          <legend>Key policy</legend>
          <label>
            <input type="radio" name="policy-mode" checked={policyMode === 'default'} onChange={() => setPolicyMode('default')} /> AWS's default key policy
          </label>
          <label>
            <input type="radio" name="policy-mode" checked={policyMode === 'custom'} onChange={() => setPolicyMode('custom')} /> Custom
          </label>
          {policyMode === 'custom' ? (
            <Field id="create-policy" label="Policy document (JSON)">
              <textarea id="create-policy" rows={10} class="code" value={policy} onInput={(e) => setPolicy(e.currentTarget.value)} />
            </Field>
          ) : null}
        </fieldset>
        <ErrorBanner error={action.error} />
        <div class="buttons">
          <button type="submit" disabled={action.busy}>
            Create
          </button>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
        </div>
      </form>
    </Dialog>
  );
}
