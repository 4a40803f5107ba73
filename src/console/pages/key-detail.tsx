/** One key: configuration, policy, aliases, tags, grants, rotation and public key, each tab a
 *  handful of ordinary KMS API calls. */
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateGrantCommand,
  type CreateGrantCommandOutput,
  DeleteAliasCommand,
  DescribeKeyCommand,
  type DescribeKeyCommandOutput,
  DisableKeyCommand,
  DisableKeyRotationCommand,
  EnableKeyCommand,
  EnableKeyRotationCommand,
  GetKeyPolicyCommand,
  type GetKeyPolicyCommandOutput,
  GetKeyRotationStatusCommand,
  type GetKeyRotationStatusCommandOutput,
  GetPublicKeyCommand,
  type GetPublicKeyCommandOutput,
  type KeyMetadata,
  ListAliasesCommand,
  type ListAliasesCommandOutput,
  ListGrantsCommand,
  type ListGrantsCommandOutput,
  ListKeyRotationsCommand,
  type ListKeyRotationsCommandOutput,
  ListResourceTagsCommand,
  type ListResourceTagsCommandOutput,
  PutKeyPolicyCommand,
  RetireGrantCommand,
  RevokeGrantCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  TagResourceCommand,
  UntagResourceCommand,
} from '@aws-sdk/client-kms';
import { useState } from 'preact/hooks';
import { ApiError, kms } from '../api';
import { ErrorBanner, Field, Notice, Tabs, useAction, useAsync, when } from '../components';

export function KeyDetailPage({ keyId }: { keyId: string }) {
  const key = useAsync(async () => (await kms<DescribeKeyCommandOutput>(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!, [keyId]);
  const [tab, setTab] = useState('configuration');
  const meta = key.value;
  const tabs = [
    { id: 'configuration', label: 'Configuration' },
    { id: 'policy', label: 'Key policy' },
    { id: 'aliases', label: 'Aliases' },
    { id: 'tags', label: 'Tags' },
    { id: 'grants', label: 'Grants' },
    ...(meta?.KeySpec === 'SYMMETRIC_DEFAULT' ? [{ id: 'rotation', label: 'Rotation' }] : []),
    ...(meta && meta.KeySpec !== 'SYMMETRIC_DEFAULT' && !meta.KeySpec?.startsWith('HMAC_') ? [{ id: 'public-key', label: 'Public key' }] : []),
  ];
  return (
    <section aria-labelledby="key-title">
      <p>
        <a href="#/keys">← Keys</a>
      </p>
      <h1 id="key-title">{keyId}</h1>
      <ErrorBanner error={key.error} />
      {meta ? (
        <>
          <Tabs tabs={tabs} active={tab} onSelect={setTab} />
          <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} class="panel">
            {tab === 'configuration' ? <Configuration meta={meta} reload={key.reload} /> : null}
            {tab === 'policy' ? <Policy keyId={keyId} /> : null}
            {tab === 'aliases' ? <Aliases keyId={keyId} /> : null}
            {tab === 'tags' ? <Tags keyId={keyId} /> : null}
            {tab === 'grants' ? <Grants keyId={keyId} /> : null}
            {tab === 'rotation' ? <Rotation keyId={keyId} /> : null}
            {tab === 'public-key' ? <PublicKey keyId={keyId} /> : null}
          </div>
        </>
      ) : null}
    </section>
  );
}

function Configuration({ meta, reload }: { meta: KeyMetadata; reload: () => void }) {
  const action = useAction();
  const [days, setDays] = useState('30');
  const [confirm, setConfirm] = useState('');
  const keyId = meta.KeyId!;
  const rows: [string, unknown][] = [
    ['ARN', meta.Arn],
    ['Description', meta.Description],
    ['State', meta.KeyState],
    ['Key spec', meta.KeySpec],
    ['Key usage', meta.KeyUsage],
    ['Origin', meta.Origin],
    ['Key manager', meta.KeyManager],
    ['Created', when(meta.CreationDate)],
    ['Deletion date', when(meta.DeletionDate)],
    ['Current key material', meta.CurrentKeyMaterialId],
    ['Encryption algorithms', meta.EncryptionAlgorithms?.join(', ')],
    ['Signing algorithms', meta.SigningAlgorithms?.join(', ')],
    ['MAC algorithms', meta.MacAlgorithms?.join(', ')],
  ];
  const act = (command: Parameters<typeof kms>[0], done: string) => action.run(() => kms(command), done).then((ok) => ok && reload());
  return (
    <>
      <dl class="facts">
        {rows
          .filter(([, v]) => v !== undefined && v !== '')
          .map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{String(v)}</dd>
            </div>
          ))}
      </dl>
      <div class="buttons">
        {meta.KeyState === 'Enabled' ? (
          <button type="button" onClick={() => void act(new DisableKeyCommand({ KeyId: keyId }), 'Key disabled.')}>
            Disable key
          </button>
        ) : null}
        {meta.KeyState === 'Disabled' ? (
          <button type="button" onClick={() => void act(new EnableKeyCommand({ KeyId: keyId }), 'Key enabled.')}>
            Enable key
          </button>
        ) : null}
        {meta.KeyState === 'PendingDeletion' ? (
          <button type="button" onClick={() => void act(new CancelKeyDeletionCommand({ KeyId: keyId }), 'Deletion cancelled; the key is disabled.')}>
            Cancel deletion
          </button>
        ) : null}
      </div>
      {meta.KeyState !== 'PendingDeletion' ? (
        <form
          class="danger"
          onSubmit={(e) => {
            e.preventDefault();
            void act(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: Number(days) }), 'Deletion scheduled.');
          }}
        >
          <h2>Schedule deletion</h2>
          <Field id="deletion-days" label="Waiting period (7-30 days)">
            <input id="deletion-days" type="number" min={7} max={30} value={days} onInput={(e) => setDays(e.currentTarget.value)} />
          </Field>
          <Field id="deletion-confirm" label={`Type the key ID (${keyId}) to confirm`}>
            <input id="deletion-confirm" autoComplete="off" value={confirm} onInput={(e) => setConfirm(e.currentTarget.value)} />
          </Field>
          <button type="submit" disabled={confirm !== keyId || action.busy}>
            Schedule key deletion
          </button>
        </form>
      ) : null}
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
    </>
  );
}

function Policy({ keyId }: { keyId: string }) {
  const current = useAsync(async () => (await kms<GetKeyPolicyCommandOutput>(new GetKeyPolicyCommand({ KeyId: keyId, PolicyName: 'default' }))).Policy ?? '', [keyId]);
  const [text, setText] = useState<string>();
  const action = useAction();
  const shown = text ?? pretty(current.value ?? '');
  let syntax: string | undefined;
  try {
    JSON.parse(shown);
  } catch (e) {
    syntax = e instanceof Error ? e.message : String(e);
  }
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          if (syntax) throw new ApiError('MalformedPolicyDocumentException', `The policy is not valid JSON: ${syntax}`);
          await kms(new PutKeyPolicyCommand({ KeyId: keyId, PolicyName: 'default', Policy: shown }));
          current.reload();
          setText(undefined);
        }, 'Key policy saved.');
      }}
    >
      <ErrorBanner error={current.error} />
      <Field id="policy-editor" label="Key policy (JSON)">
        <textarea id="policy-editor" class="code" rows={22} spellcheck={false} aria-invalid={syntax ? 'true' : 'false'} value={shown} onInput={(e) => setText(e.currentTarget.value)} />
      </Field>
      {syntax ? <p class="hint">JSON: {syntax}</p> : null}
      <div class="buttons">
        <button type="submit" disabled={action.busy}>
          Save policy
        </button>
        <button type="button" onClick={() => setText(undefined)}>
          Revert
        </button>
      </div>
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
    </form>
  );
}

function pretty(json: string): string {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}

function Aliases({ keyId }: { keyId: string }) {
  const list = useAsync(async () => (await kms<ListAliasesCommandOutput>(new ListAliasesCommand({ KeyId: keyId }))).Aliases ?? [], [keyId]);
  const [name, setName] = useState('alias/');
  const action = useAction();
  return (
    <>
      <ErrorBanner error={list.error} />
      <ul class="plain">
        {(list.value ?? []).map((a) => (
          <li key={a.AliasName}>
            {a.AliasName}{' '}
            <button type="button" aria-label={`Delete ${a.AliasName}`} onClick={() => void action.run(() => kms(new DeleteAliasCommand({ AliasName: a.AliasName! })), 'Alias deleted.').then(list.reload)}>
              Delete
            </button>
          </li>
        ))}
      </ul>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(() => kms(new CreateAliasCommand({ AliasName: name, TargetKeyId: keyId })), 'Alias created.').then((ok) => ok && (list.reload(), setName('alias/')));
        }}
      >
        <Field id="alias-name" label="New alias">
          <input id="alias-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <button type="submit">Add alias</button>
      </form>
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
    </>
  );
}

function Tags({ keyId }: { keyId: string }) {
  const list = useAsync(async () => (await kms<ListResourceTagsCommandOutput>(new ListResourceTagsCommand({ KeyId: keyId }))).Tags ?? [], [keyId]);
  const [tagKey, setTagKey] = useState('');
  const [tagValue, setTagValue] = useState('');
  const action = useAction();
  return (
    <>
      <ErrorBanner error={list.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Tag key</th>
            <th scope="col">Value</th>
            <th scope="col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {(list.value ?? []).map((t) => (
            <tr key={t.TagKey}>
              <td>{t.TagKey}</td>
              <td>{t.TagValue}</td>
              <td>
                <button type="button" aria-label={`Remove tag ${t.TagKey}`} onClick={() => void action.run(() => kms(new UntagResourceCommand({ KeyId: keyId, TagKeys: [t.TagKey!] })), 'Tag removed.').then(list.reload)}>
                  Remove
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(() => kms(new TagResourceCommand({ KeyId: keyId, Tags: [{ TagKey: tagKey, TagValue: tagValue }] })), 'Tag saved.').then((ok) => ok && (list.reload(), setTagKey(''), setTagValue('')));
        }}
      >
        <Field id="tag-key" label="Tag key">
          <input id="tag-key" value={tagKey} onInput={(e) => setTagKey(e.currentTarget.value)} />
        </Field>
        <Field id="tag-value" label="Tag value">
          <input id="tag-value" value={tagValue} onInput={(e) => setTagValue(e.currentTarget.value)} />
        </Field>
        <button type="submit">Add tag</button>
      </form>
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
    </>
  );
}

const GRANT_OPERATIONS = ['Decrypt', 'Encrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'ReEncryptFrom', 'ReEncryptTo', 'DescribeKey', 'CreateGrant', 'RetireGrant', 'Sign', 'Verify', 'GetPublicKey', 'GenerateMac', 'VerifyMac', 'DeriveSharedSecret'];

function Grants({ keyId }: { keyId: string }) {
  const list = useAsync(async () => (await kms<ListGrantsCommandOutput>(new ListGrantsCommand({ KeyId: keyId }))).Grants ?? [], [keyId]);
  const [grantee, setGrantee] = useState('');
  const [operations, setOperations] = useState<string[]>(['Decrypt']);
  const [constraintKind, setConstraintKind] = useState<'none' | 'equals' | 'subset'>('none');
  const [context, setContext] = useState('');
  const action = useAction();
  const contextMap = () => Object.fromEntries(context.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => [l.slice(0, l.indexOf('=') < 0 ? l.length : l.indexOf('=')), l.indexOf('=') < 0 ? '' : l.slice(l.indexOf('=') + 1)]));
  return (
    <>
      <ErrorBanner error={list.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Grant ID</th>
            <th scope="col">Grantee</th>
            <th scope="col">Operations</th>
            <th scope="col">Constraints</th>
            <th scope="col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {(list.value ?? []).map((g) => (
            <tr key={g.GrantId}>
              <td class="mono">{g.GrantId}</td>
              <td>{g.GranteePrincipal}</td>
              <td>{g.Operations?.join(', ')}</td>
              <td class="mono">{g.Constraints ? JSON.stringify(g.Constraints) : ''}</td>
              <td>
                <button type="button" onClick={() => void action.run(() => kms(new RevokeGrantCommand({ KeyId: keyId, GrantId: g.GrantId! })), 'Grant revoked.').then(list.reload)}>
                  Revoke
                </button>{' '}
                <button type="button" onClick={() => void action.run(() => kms(new RetireGrantCommand({ KeyId: keyId, GrantId: g.GrantId! })), 'Grant retired.').then(list.reload)}>
                  Retire
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(async () => {
            const constraints =
              constraintKind === 'equals' ? { EncryptionContextEquals: contextMap() } : constraintKind === 'subset' ? { EncryptionContextSubset: contextMap() } : undefined;
            const out = await kms<CreateGrantCommandOutput>(new CreateGrantCommand({ KeyId: keyId, GranteePrincipal: grantee, Operations: operations as never, Constraints: constraints }));
            list.reload();
            return out;
          }, 'Grant created.');
        }}
      >
        <h2>Create grant</h2>
        <Field id="grantee" label="Grantee principal (ARN)">
          <input id="grantee" required value={grantee} onInput={(e) => setGrantee(e.currentTarget.value)} />
        </Field>
        <fieldset>
          <legend>Operations</legend>
          <div class="checks">
            {GRANT_OPERATIONS.map((op) => (
              <label key={op}>
                <input type="checkbox" checked={operations.includes(op)} onChange={(e) => setOperations(e.currentTarget.checked ? [...operations, op] : operations.filter((o) => o !== op))} /> {op}
              </label>
            ))}
          </div>
        </fieldset>
        <Field id="constraint-kind" label="Encryption context constraint">
          <select id="constraint-kind" value={constraintKind} onChange={(e) => setConstraintKind(e.currentTarget.value as 'none')}>
            <option value="none">none</option>
            <option value="equals">EncryptionContextEquals</option>
            <option value="subset">EncryptionContextSubset</option>
          </select>
        </Field>
        {constraintKind !== 'none' ? (
          <Field id="constraint-context" label="Encryption context (one key=value per line)">
            <textarea id="constraint-context" rows={3} value={context} onInput={(e) => setContext(e.currentTarget.value)} />
          </Field>
        ) : null}
        <button type="submit">Create grant</button>
      </form>
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
    </>
  );
}

function Rotation({ keyId }: { keyId: string }) {
  const status = useAsync(() => kms<GetKeyRotationStatusCommandOutput>(new GetKeyRotationStatusCommand({ KeyId: keyId })), [keyId]);
  const rotations = useAsync(async () => (await kms<ListKeyRotationsCommandOutput>(new ListKeyRotationsCommand({ KeyId: keyId }))).Rotations ?? [], [keyId]);
  const [period, setPeriod] = useState('365');
  const action = useAction();
  const reload = () => {
    status.reload();
    rotations.reload();
  };
  return (
    <>
      <ErrorBanner error={status.error} />
      {status.value ? (
        <dl class="facts">
          <div>
            <dt>Automatic rotation</dt>
            <dd>{status.value.KeyRotationEnabled ? `on, every ${status.value.RotationPeriodInDays} days` : 'off'}</dd>
          </div>
          {status.value.NextRotationDate ? (
            <div>
              <dt>Next rotation</dt>
              <dd>{when(status.value.NextRotationDate)}</dd>
            </div>
          ) : null}
          {status.value.OnDemandRotationStartDate ? (
            <div>
              <dt>On-demand rotation started</dt>
              <dd>{when(status.value.OnDemandRotationStartDate)}</dd>
            </div>
          ) : null}
        </dl>
      ) : null}
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(() => kms(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: Number(period) })), 'Automatic rotation enabled.').then(reload);
        }}
      >
        <Field id="rotation-period" label="Rotation period (90-2560 days)">
          <input id="rotation-period" type="number" min={90} max={2560} value={period} onInput={(e) => setPeriod(e.currentTarget.value)} />
        </Field>
        <button type="submit">Enable automatic rotation</button>
        <button type="button" onClick={() => void action.run(() => kms(new DisableKeyRotationCommand({ KeyId: keyId })), 'Automatic rotation disabled.').then(reload)}>
          Disable automatic rotation
        </button>
      </form>
      <p>
        <button type="button" onClick={() => void action.run(() => kms(new RotateKeyOnDemandCommand({ KeyId: keyId })), 'Key rotated on demand.').then(reload)}>
          Rotate now
        </button>
      </p>
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
      <h2>Rotations</h2>
      <ErrorBanner error={rotations.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Rotated</th>
            <th scope="col">Type</th>
            <th scope="col">Key material</th>
          </tr>
        </thead>
        <tbody>
          {(rotations.value ?? []).map((r) => (
            <tr key={`${r.RotationDate}-${r.KeyMaterialId}`}>
              <td>{when(r.RotationDate)}</td>
              <td>{r.RotationType}</td>
              <td class="mono">{r.KeyMaterialId}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function PublicKey({ keyId }: { keyId: string }) {
  const action = useAction();
  return (
    <>
      <p>The public key leaves the token as a SubjectPublicKeyInfo (GetPublicKey); the private key never does.</p>
      <button
        type="button"
        onClick={() =>
          void action.run(async () => {
            const out = await kms<GetPublicKeyCommandOutput>(new GetPublicKeyCommand({ KeyId: keyId }));
            const b64 = btoa(String.fromCharCode(...out.PublicKey!));
            const pem = `-----BEGIN PUBLIC KEY-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END PUBLIC KEY-----\n`;
            const a = document.createElement('a');
            a.href = URL.createObjectURL(new Blob([pem], { type: 'application/x-pem-file' }));
            a.download = `${keyId}.pem`;
            a.click();
            URL.revokeObjectURL(a.href);
          }, 'Public key downloaded.')
        }
      >
        Download public key (PEM)
      </button>
      <ErrorBanner error={action.error} />
      <Notice text={action.notice} />
    </>
  );
}
