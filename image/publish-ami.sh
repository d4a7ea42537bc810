#!/usr/bin/env bash
# Publish a bastion raw disk image (from `make image`) as an EC2 AMI and point a launch
# template at it. Steps, each named in its error message when it fails:
#
#   check-image      the file exists and carries a GPT (UEFI boot needs one)
#   upload           aws s3 cp IMAGE s3://BUCKET/KEY
#   import-snapshot  aws ec2 import-snapshot (format raw) from that object
#   wait-import      poll describe-import-snapshot-tasks until completed (or failed / timeout)
#   register-image   UEFI, IMDSv2-only, ENA, NitroTPM, x86_64, /dev/xvda from the snapshot
#   tag              Name / Application / --tag on the AMI and its snapshot
#   launch-template  create the template, or add a version and make it the default
#
# Exit status: 0 published (the AMI id is the only line on stdout; with --dry-run stdout is the
# plan), 1 bad usage or image, 3 an AWS step failed.
#
# Requires the AWS CLI (v1 or v2) with credentials for the account. AWS_ENDPOINT_URL (and the
# per-service AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_EC2) are honoured by the CLI, so the whole
# run can be pointed at a local emulator (tests/publish_ami.rs uses moto_server).

# `test && test || die` is meant throughout: die when either test fails.
# shellcheck disable=SC2015
set -euo pipefail

prog=publish-ami
usage() {
    cat <<'EOF'
Usage: image/publish-ami.sh [options] IMAGE.raw
       image/publish-ami.sh [options] --snapshot-id snap-… 

Upload a bastion raw disk image to S3, import it as an EBS snapshot, register a UEFI AMI and
create (or add a version to) a launch template whose instances run IMDSv2 only.

Required:
  --name NAME              AMI name (unique in the account and region), e.g. bastion-0.1.0-20260101
  --bucket BUCKET          S3 bucket for the upload (not needed with --snapshot-id)
  --region REGION          default: $AWS_REGION, else $AWS_DEFAULT_REGION

Optional:
  --key KEY                S3 object key (default: bastion-images/NAME.raw)
  --description TEXT       AMI description
  --role-name ROLE         VM Import service role (default: the service's default, vmimport)
  --snapshot-id SNAP       skip upload and import: register from this existing snapshot
  --tag KEY=VALUE          extra tag on the AMI, the snapshot and the launch template (repeatable)
  --launch-template NAME   launch template to create or version (default: bastion)
  --no-launch-template     stop after registering and tagging the AMI
  --instance-type TYPE     instance type in the launch template (default: t3.small)
  --key-name NAME          EC2 key pair; first boot installs it as the admin user's SSH key
  --instance-profile NAME  IAM instance profile (the bastion's AWS identity for IAM auth)
  --settings FILE          user-data: a bastion settings document, imported on first boot
  --hop-limit N            IMDS HttpPutResponseHopLimit (default: 1, see below)
  --import-timeout SECONDS how long to wait for the snapshot import (default: 3600)
  --poll-interval SECONDS  between import status checks (default: 15)
  --dry-run                print the plan (every AWS call) and exit; nothing is sent
  -h, --help               this text

Instance metadata (launch template MetadataOptions): HttpTokens=required (IMDSv2 only),
HttpEndpoint=enabled, InstanceMetadataTags=enabled, HttpPutResponseHopLimit=1. The hop limit
is the IP TTL of IMDS's token reply: 1 reaches processes on the instance itself, which is where
bastion runs (a host systemd service). Use --hop-limit 2 only when the caller of IMDS sits one
hop further away, in a container or network namespace on the instance (docker bridge, a pod);
with 1 its token PUT gets no reply and `bastion doctor` reports hop_limit_exceeded.

The AMI: boot mode uefi, IMDS support v2.0, ENA, NitroTPM v2.0, x86_64, HVM, root device
/dev/xvda (gp3, deleted on termination). Environment: AWS_PROFILE, AWS_ENDPOINT_URL and the
rest of the AWS CLI's variables apply.
EOF
}

die() {
    printf '%s: %s\n' "$prog" "$*" >&2
    exit 1
}

# --- options -------------------------------------------------------------------------------
image="" name="" bucket="" key="" description="" role_name="" snapshot_id=""
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
launch_template=bastion instance_type=t3.small key_name="" instance_profile="" settings=""
hop_limit=1 import_timeout=3600 poll_interval=15 dry_run=0 want_template=1
extra_tags=()

need_value() {
    [ "$#" -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value (see --help)"
}
while [ "$#" -gt 0 ]; do
    case "$1" in
        --name) need_value "$@"; name=$2; shift 2 ;;
        --bucket) need_value "$@"; bucket=$2; shift 2 ;;
        --region) need_value "$@"; region=$2; shift 2 ;;
        --key) need_value "$@"; key=$2; shift 2 ;;
        --description) need_value "$@"; description=$2; shift 2 ;;
        --role-name) need_value "$@"; role_name=$2; shift 2 ;;
        --snapshot-id) need_value "$@"; snapshot_id=$2; shift 2 ;;
        --tag) need_value "$@"; extra_tags+=("$2"); shift 2 ;;
        --launch-template) need_value "$@"; launch_template=$2; shift 2 ;;
        --no-launch-template) want_template=0; shift ;;
        --instance-type) need_value "$@"; instance_type=$2; shift 2 ;;
        --key-name) need_value "$@"; key_name=$2; shift 2 ;;
        --instance-profile) need_value "$@"; instance_profile=$2; shift 2 ;;
        --settings) need_value "$@"; settings=$2; shift 2 ;;
        --hop-limit) need_value "$@"; hop_limit=$2; shift 2 ;;
        --import-timeout) need_value "$@"; import_timeout=$2; shift 2 ;;
        --poll-interval) need_value "$@"; poll_interval=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$image" ] || die "more than one image given: $image and $1"; image=$1; shift ;;
    esac
done
if [ "$#" -gt 0 ]; then
    [ -z "$image" ] && [ "$#" -eq 1 ] || die "more than one image given: ${image:+$image }$*"
    image=$1
fi

[ -n "$name" ] || die "--name is required (the AMI name)"
[ -n "$region" ] || die "--region is required (or set AWS_REGION / AWS_DEFAULT_REGION)"
if [ -n "$snapshot_id" ]; then
    [ -z "$image" ] || die "give either IMAGE or --snapshot-id, not both"
else
    [ -n "$image" ] || die "no image given: IMAGE.raw (from \`make image\`) or --snapshot-id"
    [ -n "$bucket" ] || die "--bucket is required to upload the image"
fi
[ -n "$key" ] || key="bastion-images/$name.raw"
[[ "$hop_limit" =~ ^[0-9]+$ ]] && [ "$hop_limit" -ge 1 ] && [ "$hop_limit" -le 64 ] ||
    die "--hop-limit must be 1..64, not '$hop_limit'"
[[ "$import_timeout" =~ ^[0-9]+$ ]] || die "--import-timeout must be a number of seconds, not '$import_timeout'"
[[ "$poll_interval" =~ ^[0-9]+$ ]] && [ "$poll_interval" -ge 1 ] ||
    die "--poll-interval must be a positive number of seconds, not '$poll_interval'"
for t in "${extra_tags[@]}"; do
    [[ "$t" == ?*=* ]] || die "--tag must be KEY=VALUE, not '$t'"
done
if [ -n "$settings" ]; then
    [ -r "$settings" ] || die "--settings $settings: not a readable file"
    # EC2 limit: 16 KiB of user-data before base64.
    [ "$(wc -c <"$settings")" -le 16384 ] || die "--settings $settings: larger than EC2's 16 KiB user-data limit"
fi

# --- helpers -------------------------------------------------------------------------------

# A JSON string literal. Control characters are refused rather than escaped: none belongs in
# an AMI name, a tag or an instance type.
json_str() {
    local s=$1
    [[ "$s" != *[[:cntrl:]]* ]] || die "control character in '$s'"
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# Tags as a JSON list, for --tags / TagSpecifications.
tags_json() {
    local out="" t
    for t in "Name=$name" "Application=bastion" "${extra_tags[@]}"; do
        out+="${out:+,}{\"Key\":$(json_str "${t%%=*}"),\"Value\":$(json_str "${t#*=}")}"
    done
    printf '[%s]' "$out"
}

# Run one AWS CLI call as step $1; print its stdout. In a dry run print the call on the plan
# (fd 3, the script's stdout) instead and output the placeholder $2. On failure: the step's
# name, the exit status and the CLI's error.
aws_step() {
    local step=$1 placeholder=$2
    shift 2
    if [ "$dry_run" -eq 1 ]; then
        local arg line="aws --region $region"
        for arg in "$@"; do
            # Single-quoted where the shell would otherwise split or expand it: copy-pasteable.
            if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
                line+=" $arg"
            else
                line+=" '${arg//\'/\'\\\'\'}'"
            fi
        done
        plan '  %-16s %s\n' "$step" "$line"
        printf '%s' "$placeholder"
        return 0
    fi
    local out err rc=0
    err=$(mktemp)
    out=$(aws --region "$region" "$@" 2>"$err") || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '%s: step %s failed (aws %s %s exited %d):\n' "$prog" "$step" "$1" "$2" "$rc" >&2
        sed 's/^/  /' "$err" >&2
        rm -f "$err"
        exit 3
    fi
    rm -f "$err"
    printf '%s' "$out"
}

say() {
    printf '%s: %s\n' "$prog" "$*" >&2
}

plan() {
    # shellcheck disable=SC2059 # a printf wrapper: the format is the caller's literal
    printf "$@" >&3
}

# The plan goes to stdout even from inside $(…); progress and errors go to stderr.
exec 3>&1
# Anything failing outside aws_step (which names its step itself) still says where.
# (Status 3 is an AWS step that failed and said so already.)
trap 'rc=$?; [ "$rc" -eq 3 ] || printf "%s: stopped: line %s exited %s\n" "$prog" "$LINENO" "$rc" >&2' ERR

# --- plan ----------------------------------------------------------------------------------
if [ "$dry_run" -eq 1 ]; then
    plan 'Plan (dry run, nothing is sent; region %s, endpoint %s):\n' "$region" "${AWS_ENDPOINT_URL:-the AWS default}"
    if [ -z "$snapshot_id" ]; then
        plan '  %-16s %s: readable, GPT header at byte 512\n' check-image "$image"
    fi
elif ! command -v aws >/dev/null 2>&1; then
    die "the AWS CLI (aws) is not on PATH"
fi

tags=$(tags_json)

if [ -z "$snapshot_id" ]; then
    [ -f "$image" ] && [ -r "$image" ] || die "step check-image failed: $image is not a readable file"
    [ -s "$image" ] || die "step check-image failed: $image is empty"
    # UEFI firmware boots from a GPT disk's EFI system partition; an MBR-only or bare
    # filesystem image would register fine and then never boot.
    [ "$(dd if="$image" bs=1 skip=512 count=8 status=none)" = "EFI PART" ] ||
        die "step check-image failed: $image has no GPT header (\"EFI PART\" at byte 512); boot mode uefi needs a GPT disk"

    aws_step upload "" s3 cp --no-progress "$image" "s3://$bucket/$key" >/dev/null
    [ "$dry_run" -eq 1 ] || say "uploaded $image to s3://$bucket/$key"

    container="{\"Description\":$(json_str "$name"),\"Format\":\"raw\",\"UserBucket\":{\"S3Bucket\":$(json_str "$bucket"),\"S3Key\":$(json_str "$key")}}"
    import_args=(ec2 import-snapshot --description "$name" --disk-container "$container"
        --query ImportTaskId --output text)
    [ -z "$role_name" ] || import_args+=(--role-name "$role_name")
    task=$(aws_step import-snapshot "<import-task-id>" "${import_args[@]}")
    [ "$dry_run" -eq 1 ] || say "import task $task started"

    if [ "$dry_run" -eq 1 ]; then
        aws_step wait-import "" ec2 describe-import-snapshot-tasks --import-task-ids "$task" >/dev/null
        plan '  %-16s   (every %ss until Status=completed; fail on deleted/error or after %ss)\n' "" \
            "$poll_interval" "$import_timeout"
        snapshot_id="<snapshot-id>"
    else
        deadline=$((SECONDS + import_timeout))
        while :; do
            line=$(aws_step wait-import "" ec2 describe-import-snapshot-tasks --import-task-ids "$task" \
                --query 'ImportSnapshotTasks[0].SnapshotTaskDetail.[Status,Progress,SnapshotId,StatusMessage]' \
                --output text)
            IFS=$'\t' read -r status progress snap message <<<"$line"
            case "$status" in
                completed)
                    snapshot_id=$snap
                    [[ "$snapshot_id" == snap-* ]] ||
                        die "step wait-import failed: task $task completed without a snapshot id ($line)"
                    break
                    ;;
                active | pending)
                    say "import $task: $status ${progress:-?}% ${message:-}"
                    ;;
                *)
                    die "step wait-import failed: import task $task is '$status': ${message:-no message} (is the vmimport service role allowed to read s3://$bucket/$key?)"
                    ;;
            esac
            [ "$SECONDS" -lt "$deadline" ] ||
                die "step wait-import failed: import task $task not completed after ${import_timeout}s (last status: $status ${progress:-?}%)"
            sleep "$poll_interval"
        done
        say "snapshot $snapshot_id imported"
    fi
fi

register_args=(ec2 register-image --name "$name"
    --boot-mode uefi --imds-support v2.0 --ena-support --tpm-support v2.0
    --architecture x86_64 --root-device-name /dev/xvda --virtualization-type hvm
    --block-device-mappings "[{\"DeviceName\":\"/dev/xvda\",\"Ebs\":{\"SnapshotId\":$(json_str "$snapshot_id"),\"VolumeType\":\"gp3\",\"DeleteOnTermination\":true}}]"
    --query ImageId --output text)
[ -z "$description" ] || register_args+=(--description "$description")
ami=$(aws_step register-image "<ami-id>" "${register_args[@]}")
[ "$dry_run" -eq 1 ] || say "registered $ami ($name)"

aws_step tag "" ec2 create-tags --resources "$ami" "$snapshot_id" --tags "$tags" >/dev/null

if [ "$want_template" -eq 1 ]; then
    # MetadataOptions: see the usage text for why the hop limit is 1.
    data="{\"ImageId\":$(json_str "$ami"),\"InstanceType\":$(json_str "$instance_type")"
    data+=",\"MetadataOptions\":{\"HttpTokens\":\"required\",\"HttpPutResponseHopLimit\":$hop_limit,\"HttpEndpoint\":\"enabled\",\"InstanceMetadataTags\":\"enabled\"}"
    [ -z "$key_name" ] || data+=",\"KeyName\":$(json_str "$key_name")"
    [ -z "$instance_profile" ] || data+=",\"IamInstanceProfile\":{\"Name\":$(json_str "$instance_profile")}"
    [ -z "$settings" ] || data+=",\"UserData\":\"$(base64 -w0 <"$settings")\""
    data+=",\"TagSpecifications\":[{\"ResourceType\":\"instance\",\"Tags\":$tags}]}"

    if [ "$dry_run" -eq 1 ]; then
        plan '  %-16s if launch template %s does not exist:\n' "launch-template" "$launch_template"
        aws_step launch-template "" ec2 create-launch-template --launch-template-name "$launch_template" \
            --version-description "$name" --launch-template-data "$data" \
            --tag-specifications "[{\"ResourceType\":\"launch-template\",\"Tags\":$tags}]" >/dev/null
        plan '  %-16s otherwise a new version, made the default:\n' ""
        aws_step launch-template "" ec2 create-launch-template-version --launch-template-name "$launch_template" \
            --version-description "$name" --launch-template-data "$data" >/dev/null
        aws_step launch-template "" ec2 modify-launch-template --launch-template-name "$launch_template" \
            --default-version "<new-version>" >/dev/null
    else
        # Does it exist? describe-launch-templates fails with NotFound when it does not; any
        # other failure (credentials, endpoint) must not be mistaken for "absent".
        err=$(mktemp)
        if existing=$(aws --region "$region" ec2 describe-launch-templates --launch-template-names "$launch_template" \
            --query 'LaunchTemplates[0].LaunchTemplateId' --output text 2>"$err"); then
            rm -f "$err"
            version=$(aws_step launch-template "" ec2 create-launch-template-version \
                --launch-template-id "$existing" --version-description "$name" --launch-template-data "$data" \
                --query LaunchTemplateVersion.VersionNumber --output text)
            aws_step launch-template "" ec2 modify-launch-template --launch-template-id "$existing" \
                --default-version "$version" >/dev/null
            say "launch template $launch_template ($existing): version $version is the default, with $ami"
        elif grep -q 'NotFound' "$err"; then
            rm -f "$err"
            created=$(aws_step launch-template "" ec2 create-launch-template --launch-template-name "$launch_template" \
                --version-description "$name" --launch-template-data "$data" \
                --tag-specifications "[{\"ResourceType\":\"launch-template\",\"Tags\":$tags}]" \
                --query LaunchTemplate.LaunchTemplateId --output text)
            say "launch template $launch_template ($created) created, with $ami"
        else
            printf '%s: step launch-template failed (aws ec2 describe-launch-templates):\n' "$prog" >&2
            sed 's/^/  /' "$err" >&2
            rm -f "$err"
            exit 3
        fi
    fi
fi

if [ "$dry_run" -eq 0 ]; then
    printf '%s\n' "$ami"
fi
