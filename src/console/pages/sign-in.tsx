/** Sign-in: the credential stays in this tab's memory and signs requests here (SigV4). */
import { useState } from 'preact/hooks';
import { type Session, signIn } from '../api';
import { ErrorBanner, Field, useAction } from '../components';

export function SignInPage({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [accessKeyId, setAccessKeyId] = useState('');
  const [secret, setSecret] = useState('');
  const action = useAction();
  return (
    <main class="sign-in">
      <h1>p11kms console</h1>
      <p>Sign in with an access key. It stays in this browser tab; every request is signed here and is an ordinary KMS API call.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(async () => onSignedIn(await signIn(accessKeyId, secret)));
        }}
      >
        <Field id="access-key-id" label="Access key ID">
          <input id="access-key-id" autoComplete="off" required value={accessKeyId} onInput={(e) => setAccessKeyId(e.currentTarget.value)} />
        </Field>
        <Field id="secret-access-key" label="Secret access key">
          <input id="secret-access-key" type="password" autoComplete="off" required value={secret} onInput={(e) => setSecret(e.currentTarget.value)} />
        </Field>
        <button type="submit" disabled={action.busy}>
          Sign in
        </button>
      </form>
      <ErrorBanner error={action.error} />
    </main>
  );
}
