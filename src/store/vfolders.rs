//! Virtual-folder rows as the admin API lists them.

use super::{Store, StoreError};
use rusqlite::Row;

#[derive(Debug, Clone)]
pub struct VFolderRow {
    pub id: String,
    pub host: String,
    pub name: String,
    pub max_files: i64,
    pub max_size: i64,
    pub num_files: i64,
    pub cur_size: i64,
    pub created_at: String,
    pub last_used: Option<String>,
}

fn vfolder_row(r: &Row<'_>) -> rusqlite::Result<VFolderRow> {
    Ok(VFolderRow {
        id: r.get("id")?,
        host: r.get("host")?,
        name: r.get("name")?,
        max_files: r.get("max_files")?,
        max_size: r.get("max_size")?,
        num_files: r.get("num_files")?,
        cur_size: r.get("cur_size")?,
        created_at: r.get("created_at")?,
        last_used: r.get("last_used")?,
    })
}

impl Store {
    /// Folders a user owns, is shared, or reaches through a group.
    pub async fn vfolders_of_user(&self, user_uuid: &str) -> Result<Vec<VFolderRow>, StoreError> {
        let uuid = user_uuid.to_owned();
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT v.* FROM vfolders v WHERE v.\"user\" = ?1
                    OR v.id IN (SELECT vfolder FROM vfolder_permissions WHERE \"user\" = ?1)
                    OR v.\"group\" IN (SELECT group_id FROM association_groups_users WHERE user_id = ?1)
                 ORDER BY v.name LIMIT 1000",
            )?;
            let rows = st.query_map([uuid], vfolder_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// How `user_uuid` may use a folder: `rw` for its owner and group members, the granted
    /// permission for users it is shared with; `None` without access.
    pub async fn vfolder_permission(
        &self,
        vfolder_id: &str,
        user_uuid: &str,
    ) -> Result<Option<String>, StoreError> {
        let (id, uuid) = (vfolder_id.to_owned(), user_uuid.to_owned());
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            Ok(c.query_row(
                "SELECT CASE
                    WHEN v.\"user\" = ?2 THEN 'rw'
                    WHEN v.\"group\" IN (SELECT group_id FROM association_groups_users WHERE user_id = ?2) THEN 'rw'
                    ELSE (SELECT permission FROM vfolder_permissions p WHERE p.vfolder = v.id AND p.\"user\" = ?2)
                 END FROM vfolders v WHERE v.id = ?1",
                [id, uuid],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
        })
        .await
    }
}
