import boto3


def test_s3_server_round_trip(s3_bucket: str, s3_server: str) -> None:
    s3 = boto3.client("s3")  # endpoint from AWS_ENDPOINT_URL, like production code
    s3.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"hello"
    assert s3_server.startswith("http://127.0.0.1:")
