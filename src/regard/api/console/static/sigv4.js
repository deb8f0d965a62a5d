// AWS Signature Version 4 in the browser, with WebCrypto: the secret access key derives the
// signing key (kDate, kRegion, kService, kSigning) here and is never sent. Used by login.js to
// sign the console's sign-in request, POST /console/session, as the SDKs sign API calls.
"use strict";

(function (global) {
  const encoder = new TextEncoder();

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function sha256Hex(text) {
    return hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  }

  async function hmac(key, text) {
    const raw = typeof key === "string" ? encoder.encode(key) : key;
    const imported = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    return crypto.subtle.sign("HMAC", imported, encoder.encode(text));
  }

  // "20261130T142530Z" for a Date.
  function amzDate(now) {
    return now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  }

  // The headers that sign `method path` (no query string) with `body` for the credential
  // `accessKeyId`/`secret` in `region`, service `service`: Authorization, X-Amz-Date and
  // X-Amz-Content-Sha256 (Host is signed as the browser sends it: location.host).
  async function sign({ method, path, body, host, region, service, accessKeyId, secret, now }) {
    const stamp = amzDate(now || new Date());
    const day = stamp.slice(0, 8);
    const payloadHash = await sha256Hex(body);
    const signedHeaders = "host;x-amz-content-sha256;x-amz-date";
    const canonical = [
      method,
      path,
      "",
      `host:${host}`,
      `x-amz-content-sha256:${payloadHash}`,
      `x-amz-date:${stamp}`,
      "",
      signedHeaders,
      payloadHash,
    ].join("\n");
    const scope = `${day}/${region}/${service}/aws4_request`;
    const stringToSign = ["AWS4-HMAC-SHA256", stamp, scope, await sha256Hex(canonical)].join("\n");
    const kDate = await hmac(`AWS4${secret}`, day);
    const kRegion = await hmac(kDate, region);
    const kService = await hmac(kRegion, service);
    const kSigning = await hmac(kService, "aws4_request");
    const signature = hex(await hmac(kSigning, stringToSign));
    return {
      Authorization:
        `AWS4-HMAC-SHA256 Credential=${accessKeyId}/${scope}, ` +
        `SignedHeaders=${signedHeaders}, Signature=${signature}`,
      "X-Amz-Date": stamp,
      "X-Amz-Content-Sha256": payloadHash,
    };
  }

  global.regardSigV4 = { sign, sha256Hex, amzDate };
})(window);
