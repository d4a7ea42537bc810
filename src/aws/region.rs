//! The AWS region an IAM database's tokens are signed for (and its STS AssumeRole is called
//! in) when the database does not name one.
//!
//! Order, first answer wins:
//! 1. the database's own `auth.region` (`config`);
//! 2. `AWS_REGION` / `AWS_DEFAULT_REGION` (`env`);
//! 3. the shared config file's `region` for `AWS_PROFILE` (`profile`);
//! 4. IMDS `placement/region` through the bastion's IMDSv2 client (`imds`) — with its settings,
//!    so never token-less IMDSv1 unless `[aws.imds] allow_v1_fallback` says so.
//!
//! Links 2–4 are the instance's region: the first answer is cached for the life of the process
//! (an instance never changes region), concurrent callers wait for one look-up, and a failed
//! look-up is not cached (the IMDS client's own back-off keeps a dead IMDS from being hammered).
//!
//! What this module must never do: guess a region for a token. A token signed for the wrong
//! region is refused by AWS with a bare WRONGPASS, so "no region" is an error that names the
//! database and the ways to give it one. Only STS, which is global, falls back to
//! [`FALLBACK_STS_REGION`].

use std::fmt;
use std::sync::Arc;

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::ProfileFileRegionProvider;

use crate::aws::imds::{ImdsClient, ImdsError};
use crate::aws::sdk::FALLBACK_STS_REGION;

/// Where a region came from (the `region_source` of `bastion doctor --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    /// The database's `auth.region`.
    Config,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`.
    Env,
    /// The shared config file's `region`.
    Profile,
    /// IMDS `placement/region`.
    Imds,
    /// Nothing named one; STS' home region (STS only, never a token).
    StsDefault,
}

impl RegionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionSource::Config => "config",
            RegionSource::Env => "env",
            RegionSource::Profile => "profile",
            RegionSource::Imds => "imds",
            RegionSource::StsDefault => "sts_default",
        }
    }

    /// For a sentence: "from …".
    pub fn describe(self) -> &'static str {
        match self {
            RegionSource::Config => "the database's auth.region",
            RegionSource::Env => "AWS_REGION / AWS_DEFAULT_REGION",
            RegionSource::Profile => "the AWS profile's region",
            RegionSource::Imds => "IMDS placement/region",
            RegionSource::StsDefault => "STS' default region (nothing named one)",
        }
    }
}

/// A region and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub region: String,
    pub source: RegionSource,
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.region, self.source.describe())
    }
}

/// No link named a region for `database`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "database '{database}' needs an AWS region for its IAM auth tokens and none was found: \
     {tried}. Set one: `region` in the database's auth (config: auth = {{ mode = \"iam\", \
     region = \"us-east-1\", … }}; admin: `bastion db add {database} … --region us-east-1 \
     --replace`), or AWS_REGION in the bastion's environment"
)]
pub struct RegionError {
    pub database: String,
    /// Each link that was asked, and why it had nothing.
    pub tried: String,
}

/// Resolves regions; cheap to clone, clones share the cached answer.
#[derive(Clone)]
pub struct Regions {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Err` when no IMDS client could be built (a bad `[aws.imds] endpoint`).
    imds: Result<ImdsClient, ImdsError>,
    ambient: Ambient,
    cache: tokio::sync::OnceCell<Resolved>,
}

/// Where links 2–3 look.
enum Ambient {
    /// The process' environment and profile files, through aws-config's providers.
    Process,
    /// A fixed answer (tests).
    #[cfg(test)]
    Fixed(Option<Resolved>),
}

impl fmt::Debug for Regions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Regions")
            .field("cached", &self.inner.cache.get())
            .finish_non_exhaustive()
    }
}

impl Regions {
    /// Environment, profile, then IMDS through `imds`.
    pub fn new(imds: Result<ImdsClient, ImdsError>) -> Self {
        Self::with(imds, Ambient::Process)
    }

    /// Environment and profile only (chains built without an IMDS client).
    pub fn without_imds() -> Self {
        Self::new(Err(ImdsError::TurnedOff {
            by: "this credential chain has no IMDS client",
        }))
    }

    fn with(imds: Result<ImdsClient, ImdsError>, ambient: Ambient) -> Self {
        Regions {
            inner: Arc::new(Inner {
                imds,
                ambient,
                cache: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The region for `database`'s tokens: `configured`, else the instance's.
    pub async fn for_database(
        &self,
        database: &str,
        configured: Option<&str>,
    ) -> Result<Resolved, RegionError> {
        if let Some(region) = configured {
            return Ok(Resolved {
                region: region.to_string(),
                source: RegionSource::Config,
            });
        }
        self.instance().await.map_err(|tried| RegionError {
            database: database.to_string(),
            tried,
        })
    }

    /// The region to call STS in: `configured`, else the instance's, else
    /// [`FALLBACK_STS_REGION`] (STS is global).
    pub async fn for_sts(&self, configured: Option<&str>) -> Resolved {
        if let Some(region) = configured {
            return Resolved {
                region: region.to_string(),
                source: RegionSource::Config,
            };
        }
        match self.instance().await {
            Ok(resolved) => resolved,
            Err(tried) => {
                tracing::debug!(%tried, region = FALLBACK_STS_REGION, "no region for STS; using its default");
                Resolved {
                    region: FALLBACK_STS_REGION.to_string(),
                    source: RegionSource::StsDefault,
                }
            }
        }
    }

    /// The instance's region (links 2–4), looked up once; `Err` lists what each link said.
    pub async fn instance(&self) -> Result<Resolved, String> {
        self.inner
            .cache
            .get_or_try_init(|| async {
                let resolved = self.look_up().await?;
                tracing::info!(region = %resolved.region, source = resolved.source.as_str(),
                    "AWS region for IAM databases without auth.region");
                Ok(resolved)
            })
            .await
            .cloned()
    }

    async fn look_up(&self) -> Result<Resolved, String> {
        match &self.inner.ambient {
            Ambient::Process => {
                if let Some(r) = EnvironmentVariableRegionProvider::new().region().await {
                    return Ok(Resolved {
                        region: r.to_string(),
                        source: RegionSource::Env,
                    });
                }
                if let Some(r) = ProfileFileRegionProvider::new().region().await {
                    return Ok(Resolved {
                        region: r.to_string(),
                        source: RegionSource::Profile,
                    });
                }
            }
            #[cfg(test)]
            Ambient::Fixed(Some(resolved)) => return Ok(resolved.clone()),
            #[cfg(test)]
            Ambient::Fixed(None) => {}
        }
        let imds = match &self.inner.imds {
            Ok(client) => match client.region().await {
                Ok(region) if is_region(&region) => {
                    return Ok(Resolved {
                        region,
                        source: RegionSource::Imds,
                    })
                }
                Ok(region) => format!("imds (placement/region answered {region:?}, not a region)"),
                Err(e) => format!("imds ({e})"),
            },
            Err(e) => format!("imds ({e})"),
        };
        Err(format!(
            "tried env (AWS_REGION and AWS_DEFAULT_REGION unset), profile (no region for \
             AWS_PROFILE in the shared config file), {imds}"
        ))
    }
}

/// Looks like an AWS region name (`us-east-1`, `us-gov-west-1`, `cn-north-1`).
pub fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::imds::ImdsSettings;

    /// An IMDS client that is turned off: asking it fails at once, without I/O.
    fn imds_off() -> Result<ImdsClient, ImdsError> {
        let mut settings = ImdsSettings::for_endpoint("http://127.0.0.1:9").unwrap();
        settings.turned_off_by = Some("test");
        ImdsClient::new(settings)
    }

    #[tokio::test]
    async fn configured_region_wins_without_asking_anything() {
        let env = Resolved {
            region: "eu-west-1".into(),
            source: RegionSource::Env,
        };
        let regions = Regions::with(imds_off(), Ambient::Fixed(Some(env)));
        let r = regions
            .for_database("cache", Some("ap-south-1"))
            .await
            .unwrap();
        assert_eq!(
            (r.region.as_str(), r.source),
            ("ap-south-1", RegionSource::Config)
        );
        assert!(regions.inner.cache.get().is_none(), "nothing was looked up");
        let r = regions.for_database("cache", None).await.unwrap();
        assert_eq!(
            (r.region.as_str(), r.source),
            ("eu-west-1", RegionSource::Env)
        );
    }

    #[tokio::test]
    async fn no_region_names_the_database_and_every_link() {
        let regions = Regions::with(imds_off(), Ambient::Fixed(None));
        let e = regions.for_database("cache", None).await.unwrap_err();
        let m = e.to_string();
        assert!(m.contains("database 'cache' needs an AWS region"), "{m}");
        assert!(
            m.contains("env (")
                && m.contains("profile (")
                && m.contains("imds (IMDS is turned off"),
            "{m}"
        );
        assert!(m.contains("--region") && m.contains("AWS_REGION"), "{m}");
        // STS still has somewhere to go.
        let sts = regions.for_sts(None).await;
        assert_eq!(
            (sts.region.as_str(), sts.source),
            (FALLBACK_STS_REGION, RegionSource::StsDefault)
        );
    }

    #[test]
    fn region_names() {
        for ok in ["us-east-1", "us-gov-west-1", "cn-north-1", "eu-central-2"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "us east",
            "-us",
            "us-east-1/x",
            "us-east-1\n",
        ] {
            assert!(!is_region(bad), "{bad:?}");
        }
    }
}
