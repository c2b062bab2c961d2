// The per-genre parts of serverless.yml, made from one list: the `genres` param.
//
// For each genre: a bucket `<Genre>Bucket` (named by the param `<genre>Bucket` if given, else
// `bucketPrefix` + the genre; its properties are serverless.yml's `custom.genreBucket`), the
// stack output `<Genre>BucketName`, its objects in the consumers' policy and its probe prefix
// in the operators' policy, both under the genre's key prefix (the param `<genre>KeyPrefix`, ''
// if not given: Shelver's GENRE_KEY_PREFIXES entry for it). So adding a genre is `--param="genres=scifi,romance,horror"`, and
// `make run`/`make infra` pass the genres of Shelver's GENRE_BUCKETS (scripts/run_local.py).
//
// osls calls this once for each `${file(./serverless-genres.js):<part>}` of serverless.yml.
'use strict';

// A genre names CloudFormation resources (`ScifiBucket`): letters and digits only.
const GENRE = /^[a-z][a-z0-9]*$/;

const genreList = (text) => {
  const genres = String(text)
    .split(',')
    .map((genre) => genre.trim().toLowerCase());
  for (const genre of genres) {
    if (!GENRE.test(genre)) {
      throw new Error(
        `genres=${text}: ${JSON.stringify(genre)} is not a genre serverless.yml can make a ` +
          'bucket for (a letter, then letters and digits; it names the resources ' +
          '<Genre>Bucket and <Genre>BucketName); make that bucket by hand instead'
      );
    }
  }
  if (new Set(genres).size !== genres.length) {
    throw new Error(`genres=${text}: a genre is given more than once`);
  }
  return genres;
};

const logicalId = (genre) => `${genre[0].toUpperCase()}${genre.slice(1)}Bucket`;

module.exports = async ({ resolveVariable, resolveConfigurationProperty }) => {
  const genres = genreList(await resolveVariable('param:genres'));
  const prefix = (await resolveVariable("param:bucketPrefix, ''")) || '';
  const template = await resolveConfigurationProperty(['custom', 'genreBucket']);
  const buckets = {};
  const keyPrefixes = {};
  for (const genre of genres) {
    keyPrefixes[genre] = (await resolveVariable(`param:${genre}KeyPrefix, ''`)) || '';
    if (keyPrefixes[genre] && !keyPrefixes[genre].endsWith('/')) {
      throw new Error(`${genre}KeyPrefix=${keyPrefixes[genre]}: a key prefix ends in '/'`);
    }
    const name = (await resolveVariable(`param:${genre}Bucket, null`)) || `${prefix}${genre}`;
    buckets[genre] = name;
  }
  const names = Object.values(buckets);
  const shared = names.find((name, index) => names.indexOf(name) !== index);
  if (shared) {
    throw new Error(`two genres name the bucket ${shared}: serverless.yml makes one per genre`);
  }
  const resources = { Resources: {}, Outputs: {} };
  for (const genre of genres) {
    const id = logicalId(genre);
    const bucket = JSON.parse(JSON.stringify(template));
    bucket.Properties = { BucketName: buckets[genre], ...bucket.Properties };
    resources.Resources[id] = bucket;
    resources.Outputs[`${id}Name`] = { Value: { Ref: id } };
  }
  return {
    resources,
    // ConsumerPolicy: the books, written (PutObject) and read (GetObject: HeadObject).
    bookObjects: genres.map((genre) => ({
      'Fn::Sub': `\${${logicalId(genre)}.Arn}/${keyPrefixes[genre]}*`,
    })),
    // OperatorPolicy: the buckets `shelver ls` lists.
    bucketArns: genres.map((genre) => ({ 'Fn::GetAtt': [logicalId(genre), 'Arn'] })),
    // OperatorPolicy: `shelver check`'s probe objects, put and deleted.
    probeObjects: genres.map((genre) => ({
      'Fn::Sub': `\${${logicalId(genre)}.Arn}/${keyPrefixes[genre]}.shelver-check/*`,
    })),
  };
};
