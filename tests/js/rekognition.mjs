// Create a collection, index faces, search by image, delete the collection: the AWS SDK for
// JavaScript v3, unchanged, pointed at regard with `endpoint`. Prints one JSON summary line.
//
// Usage: node rekognition.mjs ENDPOINT COLLECTION_ID INDEX_IMAGE OTHER_IMAGE PROBE_IMAGE
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
import { readFileSync } from "node:fs";
import {
  RekognitionClient,
  CreateCollectionCommand,
  IndexFacesCommand,
  SearchFacesByImageCommand,
  DeleteCollectionCommand,
  DescribeCollectionCommand,
  ResourceNotFoundException,
} from "@aws-sdk/client-rekognition";

const [endpoint, collectionId, indexPath, otherPath, probePath] = process.argv.slice(2);
const client = new RekognitionClient({
  endpoint,
  region: "us-east-1",
  maxAttempts: 1,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
});

const created = await client.send(new CreateCollectionCommand({ CollectionId: collectionId }));
const indexed = [];
for (const [path, externalId] of [[indexPath, "person-a"], [otherPath, "person-b"]]) {
  const r = await client.send(
    new IndexFacesCommand({
      CollectionId: collectionId,
      Image: { Bytes: readFileSync(path) },
      ExternalImageId: externalId,
    }),
  );
  indexed.push(...r.FaceRecords.map((f) => ({ FaceId: f.Face.FaceId, ExternalImageId: f.Face.ExternalImageId })));
}
const search = await client.send(
  new SearchFacesByImageCommand({ CollectionId: collectionId, Image: { Bytes: readFileSync(probePath) } }),
);
const deleted = await client.send(new DeleteCollectionCommand({ CollectionId: collectionId }));
let afterDelete = "still there";
try {
  await client.send(new DescribeCollectionCommand({ CollectionId: collectionId }));
} catch (err) {
  afterDelete = err instanceof ResourceNotFoundException ? "ResourceNotFoundException" : String(err.name);
}
console.log(
  JSON.stringify({
    createStatus: created.StatusCode,
    collectionArn: created.CollectionArn,
    indexed,
    matches: search.FaceMatches.map((m) => ({
      ExternalImageId: m.Face.ExternalImageId,
      Similarity: m.Similarity,
    })),
    searchedFaceConfidence: search.SearchedFaceConfidence,
    deleteStatus: deleted.StatusCode,
    afterDelete,
  }),
);
